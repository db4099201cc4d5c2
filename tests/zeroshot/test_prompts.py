"""The thesis's prompt: exact wording, order and caps, bounded length, templates and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.config import Config, ConfigError, EmbeddingsConfig, LabelsConfig, PoiFeaturesConfig, ZeroShotConfig
from landuse.zeroshot.prompts import (
    MAX_NAME_CHARS,
    build_prompts,
    class_texts,
    instruction,
    is_zero_pois,
    level_counts,
    load_template,
    paragraph,
    prompt,
    region_prompts,
    template_from_dict,
)

THESIS_CLASSES = ["residential", "commercial", "industrial", "public_service", "transport", "non_construction"]
REGION = {"Chinese restaurant": 2, "food restaurant": 1, "hotel": 2, "school": 3, "office": 60,
          "residential building": 60, "park": 0}


@pytest.fixture(scope="module")
def en():
    return load_template("en")


@pytest.fixture(scope="module")
def zh():
    return load_template("zh")


def test_thesis_prompt_exactly(en) -> None:
    assert prompt(REGION, THESIS_CLASSES, en, 30) == (
        "[Instruction] There are six land use types: (1) residential, (2) commercial, (3) industrial, (4) education, "
        "health care, civic, governmental and cultural, (5) transportation facilities, and (6) outdoors and natural. "
        "Paragraph: In this urban region, there are 128 points of interest, including 60 office, 60 residential "
        "building, 3 school, 2 Chinese restaurant, 2 hotel, and 1 food restaurant. "
        "Q: What is the primary land use category of this urban region? A:"
    )


def test_cap_says_how_many_more_and_small_regions_read_well(en) -> None:
    assert paragraph(REGION, en, 3) == ("In this urban region, there are 128 points of interest, including 60 office, "
                                        "60 residential building, 3 school, and 3 more categories.")
    assert paragraph(REGION, en, 5).endswith("2 hotel, and 1 more category.")
    assert paragraph({"school": 4, "bank": 4}, en, 30) == ("In this urban region, there are 8 points of interest, "
                                                           "including 4 bank and 4 school.")
    assert paragraph({"school": 1}, en, 30) == "In this urban region, there is 1 point of interest: 1 school."
    assert paragraph({"a": 2}, en, 30, total=5) == "In this urban region, there are 5 points of interest, including 2 a."


def test_zero_pois_is_its_own_well_formed_sentence(en) -> None:
    text = paragraph({}, en, 30)
    assert text == "In this urban region, there are no points of interest." == paragraph({"park": 0}, en, 30)
    assert is_zero_pois(text, en) and not is_zero_pois(paragraph({"park": 1}, en, 30), en)
    whole = prompt({}, THESIS_CLASSES, en, 30)
    assert f"Paragraph: {text} Q: " in whole and "{" not in whole and whole.endswith("A:")


def test_ten_thousand_pois_over_hundreds_of_categories_give_a_bounded_prompt(en) -> None:
    rng = np.random.default_rng(0)
    names = [f"category number {i} " + "very long name " * (20 if i % 7 == 0 else 0) for i in range(600)]
    counts = dict(zip(names, rng.multinomial(10_000, np.ones(600) / 600)))
    assert sum(counts.values()) == 10_000
    text = prompt(counts, THESIS_CLASSES, en, 30)
    head = prompt({"x": 1}, THESIS_CLASSES, en, 30)
    # 30 items of at most MAX_NAME_CHARS + a count and a separator, plus "and N more categories"
    assert len(text) <= len(head) + 30 * (MAX_NAME_CHARS + 12) + 60
    assert "including" in text and "10000 points of interest" in text and "and 570 more categories." in text
    assert len(paragraph(counts, en, 1_000)) > len(text)  # the cap is what bounds it
    assert len(prompt(counts, THESIS_CLASSES, en, 30)) < 4_000


def test_negative_or_fractional_counts_are_refused(en) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        paragraph({"a": -1}, en, 30)
    with pytest.raises(ValueError, match="non-negative integer"):
        paragraph({"a": 1.5}, en, 30)
    with pytest.raises(ValueError, match="max_categories"):
        paragraph({"a": 1}, en, 0)


def test_chinese_templates(zh) -> None:
    counts = {"中餐厅": 2, "快餐厅": 1, "宾馆": 2, "公园": 3}
    assert prompt(counts, THESIS_CLASSES, zh, 30) == (
        "[指令] 共有六种土地利用类型：（1）居住用地；（2）商业用地；（3）工业用地；（4）教育、医疗、市政、政府和文化用地；"
        "（5）交通设施用地；以及（6）户外与自然（非建设用地）。 段落：在这个城市区域中，共有8个兴趣点，包括3个公园、"
        "2个中餐厅、2个宾馆和1个快餐厅。 问：这个城市区域的主要土地利用类型是什么？ 答："
    )
    assert paragraph(counts, zh, 2) == "在这个城市区域中，共有8个兴趣点，包括3个公园、2个中餐厅和其他2类兴趣点。"
    assert paragraph({}, zh, 30) == "在这个城市区域中，没有任何兴趣点。"
    assert class_texts(["residential", "green_space"], zh) == ["这是一个以居住用地为主的区域。", "这是一个以公园与绿地为主的区域。"]


def test_class_texts_and_unnamed_classes(en) -> None:
    assert class_texts(["residential", "public_service", "my_own_class"], en) == [
        "This is an area dominated by residential.",
        "This is an area dominated by education, health care, civic, governmental and cultural.",
        "This is an area dominated by my own class.",
    ]
    assert instruction(["a_b", "c"], en) == "There are two land use types: (1) a b and (2) c."
    assert instruction([f"c{i}" for i in range(13)], en).startswith("There are 13 land use types: (1) c0, ")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_or_unknown_placeholder_is_one_line(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", 'paragraph: "In this region there are many POIs: {categories}."\n')
    with pytest.raises(ConfigError) as err:
        load_template("en", bad)
    assert str(err.value) == (f"{bad}: template 'paragraph' lacks the placeholder {{total}}: "
                              "'In this region there are many POIs: {categories}.'")
    assert "\n" not in str(err.value)
    typo = _write(tmp_path / "typo.yaml", 'class_description: "An area of {klass}."\n')
    with pytest.raises(ConfigError, match=r"'class_description' lacks the placeholder \{class\}"):
        load_template("en", typo)
    extra = _write(tmp_path / "extra.yaml", 'question: "Which use is {best}?"\n')
    with pytest.raises(ConfigError, match=r"'question' has an unknown placeholder \{best\} \(allowed: none\)"):
        load_template("en", extra)
    with pytest.raises(ConfigError, match="unknown template key 'questoin'"):
        load_template("en", _write(tmp_path / "key.yaml", "questoin: hi\n"))
    with pytest.raises(ConfigError, match="unbalanced braces"):
        load_template("en", _write(tmp_path / "brace.yaml", 'question: "What {is it?"\n'))
    with pytest.raises(ConfigError, match="no prompt templates for 'fr'"):
        load_template("fr")
    with pytest.raises(ConfigError, match="template key 'prompt' is missing"):
        template_from_dict({k: v for k, v in vars(load_template("en")).items()
                            if k not in ("prompt", "source", "paragraph_one")})


def test_own_file_overrides_some_keys(tmp_path: Path) -> None:
    own = _write(tmp_path / "own.yaml",
                 'language: en\nquestion: "Which single land use fits best?"\nclass_names: {residential: housing}\n')
    template = load_template("zh", own)  # the file's language is its base
    assert template.language == "en" and template.source == str(own)
    text = prompt({"shop": 2}, ["residential"], template, 30)
    assert text == ("[Instruction] There are one land use types: (1) housing. Paragraph: In this urban region, there "
                    "are 2 points of interest, including 2 shop. Q: Which single land use fits best? A:")


def _poi_counts(rows: list[tuple[int, int, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["region_id", "level", "token", "n_pois"]).astype({"level": "int32"})


def test_level_falls_back_to_the_finest_level_a_region_has() -> None:
    counts = _poi_counts([(1, 1, "food", 3), (1, 2, "food:noodles", 2), (1, 2, "food:tea", 1),
                          (2, 1, "park", 4), (3, 1, "shop", 1), (3, 2, "shop:mall", 1), (3, 3, "shop:mall:big", 1)])
    at2 = level_counts(counts, 2)
    assert sorted(map(tuple, at2.to_numpy().tolist())) == [(1, "food:noodles", 2), (1, "food:tea", 1),
                                                            (2, "park", 4), (3, "shop:mall", 1)]
    assert level_counts(counts, 1)["token"].tolist() == ["food", "park", "shop"]


def test_build_prompts_reads_category_text_and_keeps_regions_without_pois(en) -> None:
    counts = _poi_counts([(7, 1, "2", 5), (7, 1, "7", 1), (7, 1, "70", 2), (9, 1, "13", 1)])
    mapping = {"2": "Education Facility", "7": "Commercial", "70": "Commercial"}  # two tokens, one text: summed
    prompts = build_prompts(np.array([9, 8, 7]), counts, ["residential", "commercial"], en, 1, 30, mapping)
    assert prompts.region_ids.tolist() == [9, 8, 7]
    assert prompts.paragraphs == [
        "In this urban region, there is 1 point of interest: 1 13.",
        "In this urban region, there are no points of interest.",
        "In this urban region, there are 8 points of interest, including 5 Education Facility and 3 Commercial.",
    ]
    assert prompts.prompts[2].startswith("[Instruction] There are two land use types: (1) residential and (2) "
                                         "commercial. Paragraph: In this urban region, there are 8 ")
    assert prompts.class_texts == ["This is an area dominated by residential.", "This is an area dominated by commercial."]


def test_region_prompts_from_a_config(tmp_path: Path) -> None:
    csv = _write(tmp_path / "text.csv", "token,text\nsch,Primary school\n")
    config = Config(name="t", work_dir=tmp_path / "work", labels=LabelsConfig(classes=("residential", "industrial")),
                    embeddings=EmbeddingsConfig(poi_features=PoiFeaturesConfig(category_text=csv)),
                    zeroshot=ZeroShotConfig(level=2, max_categories=1))
    counts = _poi_counts([(1, 1, "edu", 3), (1, 2, "sch", 2), (1, 2, "uni", 1)])
    prompts = region_prompts(config, counts, region_ids=np.array([1, 2]))
    assert prompts.paragraphs == [("In this urban region, there are 3 points of interest, including 2 Primary school "
                                  "and 1 more category."), "In this urban region, there are no points of interest."]
    zh = region_prompts(Config(name="t", work_dir=tmp_path / "work", zeroshot=ZeroShotConfig(language="zh"),
                               embeddings=EmbeddingsConfig(poi_features=PoiFeaturesConfig(category_text=csv))),
                        counts, region_ids=np.array([1]))
    assert zh.paragraphs == ["在这个城市区域中，共有3个兴趣点，包括3个edu。"]  # zh keeps the source's own names
