"""Pretraining: representations learned before (or outside) the target city's supervised training.

:mod:`~landuse.pretraining.pretrain` is the MMGR-style contrastive pretraining of an image encoder
on image patches (image–image and image–POI NT-Xent, checkpoints, resume),
:mod:`~landuse.pretraining.image_embeddings` turns an encoder into the per-region table
``image_embeddings`` (H_img, pooled over tile overlaps), and :mod:`~landuse.pretraining.transfer`
pretrains an HGCN variant on a source city and fine-tunes it on the target city. The supervised
training protocol these build on lives in :mod:`landuse.training`, the encoder architectures in
:mod:`landuse.models`, and the stage wiring in :mod:`landuse.stages.pretrain` /
:mod:`landuse.stages.transfer`.
"""
