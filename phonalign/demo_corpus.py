"""What the bundled demo corpus is made of: sentences, voices, splits and the prosody of each emotion.

:func:`demo_plan` is the deterministic list of its 240 utterances (language x voice x sentence x
emotion, with seeded prosody jitter); :mod:`scripts.make_demo_corpus` renders it with
:func:`phonalign.synth.synthesize` into ``phonalign/demo_data``. Nothing here needs espeak-ng.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .espeak import Prosody, SynthError
from .records import EMOTIONS

# --------------------------------------------------------------------------------------------
# Emotion renditions: prosody per emotion, jittered per utterance with a seeded generator.
# --------------------------------------------------------------------------------------------

#: Centre of each emotion's prosody, following the acoustic correlates reported for acted
#: emotional speech (e.g. Scherer 2003; Juslin & Laukka 2003): happiness raises pitch level and
#: range and speeds up; anger is loud and fast with a high but flatter, tense contour; sadness is
#: low, narrow, slow and soft. Values are espeak-ng parameters (see :class:`Prosody`).
EMOTION_PROSODY: dict[str, Prosody] = {
    "Neutral": Prosody(rate=165, pitch=45, range=45, volume=100),
    "Happiness": Prosody(rate=200, pitch=75, range=95, volume=115),
    "Anger": Prosody(rate=190, pitch=58, range=25, volume=190),
    "Sadness": Prosody(rate=120, pitch=25, range=10, volume=60),
}
#: Per-utterance jitter (uniform, +- this much) so that each class has some spread.
PROSODY_JITTER = Prosody(rate=12, pitch=6, range=8, volume=12)


def jittered_prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    """The prosody of ``emotion`` with uniform jitter drawn from ``rng`` (clipped to espeak's
    valid ranges)."""
    if emotion not in EMOTION_PROSODY:
        raise SynthError(f"unknown emotion {emotion!r}", hint=f"use one of {', '.join(EMOTIONS)}")
    centre = EMOTION_PROSODY[emotion]
    d = rng.uniform(-1.0, 1.0, size=4)
    return Prosody(
        rate=int(np.clip(round(centre.rate + d[0] * PROSODY_JITTER.rate), 80, 450)),
        pitch=int(np.clip(round(centre.pitch + d[1] * PROSODY_JITTER.pitch), 0, 100)),
        range=int(np.clip(round(centre.range + d[2] * PROSODY_JITTER.range), 0, 100)),
        volume=int(np.clip(round(centre.volume + d[3] * PROSODY_JITTER.volume), 1, 200)),
    )


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to synthesise one utterance of the demo corpus."""

    utt_id: str
    language: str
    speaker: str
    voice: str
    sentence_index: int
    text: str
    emotion: str
    split: str
    prosody: Prosody


def plan_corpus(
    sentences: Mapping[str, Sequence[str]],
    voices: Mapping[str, Sequence[tuple[str, str]]],
    splits: Mapping[str, Sequence[str]],
    *,
    seed: int,
    emotions: Sequence[str] = EMOTIONS,
) -> list[UtterancePlan]:
    """The deterministic list of utterances of a corpus: language x voice x sentence x emotion.

    Parameters
    ----------
    sentences : language -> sentences (pinyin with tone digits for ``zh``).
    voices : language -> list of (speaker id, espeak voice).
    splits : language -> split name of each sentence (same length as its sentences); the corpus
        is split by sentence, so every speaker and emotion appears in every split.
    seed : seeds the prosody jitter; the same arguments always give the same plan.
    emotions : emotion classes to render.
    """
    rng = np.random.default_rng(seed)
    plan: list[UtterancePlan] = []
    for lang in sorted(sentences):
        sents = list(sentences[lang])
        if len(splits[lang]) != len(sents):
            raise SynthError(f"{lang}: {len(sents)} sentences but {len(splits[lang])} split labels")
        for speaker, voice in voices[lang]:
            for k, text in enumerate(sents):
                for emotion in emotions:
                    plan.append(UtterancePlan(
                        utt_id=f"{speaker}_s{k:02d}_{emotion[:3].lower()}",
                        language=lang, speaker=speaker, voice=voice, sentence_index=k, text=text,
                        emotion=emotion, split=splits[lang][k], prosody=jittered_prosody(emotion, rng),
                    ))
    return plan


# --------------------------------------------------------------------------------------------
# The bundled demo corpus (phonalign/demo_data), built by scripts/make_demo_corpus.py.
# --------------------------------------------------------------------------------------------

#: Our own sentences (no third-party text). English words are all in CMUdict, so the English
#: half aligns with pocketsphinx without out-of-vocabulary words; together they cover the six
#: vowel classes in both languages. Mandarin is pinyin with tone digits (characters in the README).
DEMO_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The black cat sat on a warm mat",
        "Please take the blue boat to the old town",
        "My father keeps his red books in a wooden box",
        "We need three cups of hot tea before noon",
        "She bought a good pair of boots in the city",
        "The dog ran out of the house after the ball",
        "Ten people waited for the late bus today",
        "A small bird sang a sweet song in the garden",
        "He saw a brown cow eat green grass by the road",
        "The boy broke the toy but nobody was upset",
    ),
    "zh": (
        "wo3 men2 qu4 bei3 jing1 kan4 peng2 you3",
        "ta1 de5 ge1 ge5 mei2 you3 lai2",
        "ma1 ma5 zai4 chu2 fang2 zuo4 fan4",
        "xiao3 gou3 zai4 hua1 yuan2 li3 pao3",
        "lao3 shi1 gei3 wo3 men2 jiang3 gu4 shi5",
        "zhe4 ben3 shu1 fei1 chang2 you3 yi4 si5",
        "di4 di5 mai3 le5 yi4 shuang1 xin1 xie2",
        "ming2 tian1 wo3 yao4 zuo4 huo3 che1 hui2 jia1",
        "ta1 men2 zai4 gong1 yuan2 li3 chang4 ge1",
        "qing3 ni3 ba3 chuang1 hu5 guan1 shang4",
    ),
}
#: Chinese characters of the Mandarin sentences, for people reading the corpus.
DEMO_HANZI: tuple[str, ...] = (
    "我们去北京看朋友", "他的哥哥没有来", "妈妈在厨房做饭", "小狗在花园里跑", "老师给我们讲故事",
    "这本书非常有意思", "弟弟买了一双新鞋", "明天我要坐火车回家", "他们在公园里唱歌", "请你把窗户关上",
)
#: Speakers: espeak-ng voice variants (two male, one female per language); three voices keep the
#: committed corpus under 15 MB.
DEMO_VOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("en_m1", "en-us+m1"), ("en_m3", "en-us+m3"), ("en_f2", "en-us+f2")),
    "zh": (("zh_m1", "cmn-latn-pinyin+m1"), ("zh_m3", "cmn-latn-pinyin+m3"), ("zh_f2", "cmn-latn-pinyin+f2")),
}
#: Split by sentence: every speaker and every emotion is in every split, and no sentence text is
#: shared between splits (s00-s05 train, s06-s07 dev, s08-s09 test).
DEMO_SPLITS: dict[str, tuple[str, ...]] = {
    lang: ("train",) * 6 + ("dev",) * 2 + ("test",) * 2 for lang in ("en", "zh")
}
#: Seed of the prosody jitter of the committed corpus.
DEMO_SEED = 20240704


def demo_plan(seed: int = DEMO_SEED) -> list[UtterancePlan]:
    """The plan of the committed demo corpus (240 utterances)."""
    return plan_corpus(DEMO_SENTENCES, DEMO_VOICES, DEMO_SPLITS, seed=seed)
