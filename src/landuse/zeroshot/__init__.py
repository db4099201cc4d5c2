"""Zero-shot land use: POI-paragraph prompts for language models and CLIP-style image–text scoring.

- :mod:`landuse.zeroshot.prompts`: the thesis's prompt (instruction, POI paragraph, question) as a
  pure function of a region's POI counts and the class list; templates are data in ``conf/prompts/``;
- :mod:`landuse.zeroshot.base`: :class:`ZeroShotMethod` and the method registry;
- one module per method: ``text`` (offline sentence embeddings), ``llm`` (the user's
  OpenAI-compatible endpoint), ``image`` (the user's CLIP checkpoint).
"""
