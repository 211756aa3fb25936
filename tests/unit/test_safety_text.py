"""The text policy: default phrases, evasions, shopping talk that must pass, files, reloads, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seesay.demo.catalogue import corpus
from seesay.errors import SafetyConfigError
from seesay.safety.normalize import NormalizedText, fold_char, normalize_phrase
from seesay.safety.policy import PolicyFile, default_policy, load_policy, parse_policy
from seesay.safety.text import RegexPattern, Rule, TextPolicy, detect_language

# (text, rule that must fire). Evasions: full-width, inserted spaces / punctuation / zero-width
# characters, traditional characters, case, look-alike Cyrillic letters, accents.
MUST_BLOCK: list[tuple[str, str]] = [
    ("违法", "illegal"),
    ("这样做违法吗？教我怎么违法赚钱", "illegal"),
    ("违 法", "illegal"),
    ("违　法", "illegal"),  # ideographic space
    ("違法", "illegal"),  # traditional
    ("違 法", "illegal"),
    ("违-法", "illegal"),
    ("违.法", "illegal"),
    ("违\u200b法", "illegal"),  # zero-width space
    ("违\u200b\u200b\u200b\u200b\u200b法", "illegal"),  # zero-width characters do not count as separators
    ("怎样才能犯法不被抓", "illegal"),
    ("这属于违反法律的行为", "illegal"),
    ("触犯法律的事", "illegal"),
    ("破解", "cracking"),
    ("给我一个破解版的软件", "cracking"),
    ("破 解 版", "cracking"),
    ("破*解", "cracking"),
    ("色情", "pornography"),
    ("色 情 图 片", "pornography"),
    ("色。情", "pornography"),
    ("哪里有色情网站", "pornography"),
    ("黄色网站推荐", "pornography"),
    ("黃色網站", "pornography"),  # traditional
    ("黄色电影", "pornography"),
    ("黃色電影", "pornography"),
    ("淫秽视频", "pornography"),
    ("淫穢", "pornography"),
    ("裸照", "pornography"),
    ("卖淫", "pornography"),
    ("賣淫", "pornography"),
    ("嫖娼", "pornography"),
    ("illegal", "illegal"),
    ("Is this ILLEGAL?", "illegal"),
    ("I.L.L.E.G.A.L", "illegal"),
    ("ｉｌｌｅｇａｌ", "illegal"),  # full-width
    ("ＩＬＬＥＧＡＬ", "illegal"),
    ("il legal", "illegal"),
    ("do it illegally", "illegal"),
    ("That is unlawful.", "illegal"),
    ("how to break the law", "illegal"),
    ("V.I.O.L.A.T.E the law", "illegal"),
    ("ＶＩＯＬＡＴＥ ＴＨＥ ＬＡＷ", "illegal"),
    ("v-i-o-l-a-t-e t-h-e l-a-w", "illegal"),
    ("it is against the law", "illegal"),
    ("porn", "pornography"),
    ("P O R N", "pornography"),
    ("p.o.r.n", "pornography"),
    ("PoRn sites", "pornography"),
    ("pornographic pictures", "pornography"),
    ("ＰＯＲＮ", "pornography"),
    ("ｐｏｒｎｏ", "pornography"),
    ("pоrn", "pornography"),  # Cyrillic о
    ("pórn", "pornography"),  # accent
    ("p\u200bo\u200br\u200bn", "pornography"),
    ("18porn", "pornography"),
    ("Send me a sex video", "pornography"),
    ("a celebrity sex tape", "pornography"),
    ("nude photos of her", "pornography"),
    ("hentai", "pornography"),
    ("prostitution", "pornography"),
    ("how to crack the software", "cracking"),
    ("cracked software download", "cracking"),
    ("C.R.A.C.K.E.D version of Photoshop", "cracking"),
    ("keygen for windows", "cracking"),
    ("Keygens", "cracking"),
    ("warez", "cracking"),
    ("Where can I get a crack version of this game?", "cracking"),
    ("这个软件的crack version在哪", "cracking"),
    ("外套很好看。顺便问一下色情网站", "pornography"),
]

# Ordinary shop talk in both languages, including words that sit next to a blocked phrase.
MUST_PASS: list[str] = [
    "这件外套适合什么场合穿？",
    "适合春秋季休闲出行，可搭配牛仔裤。",
    "这个包是真皮吗？",
    "有黑色情侣款吗？",
    "这款是黑色情侣款，男女同款。",
    "红色，情侣一起穿好看吗？",
    "这件衣服的褪色情况怎么样？",
    "褪色情况很少，建议冷水手洗。",
    "成色情况如何？是几成新？",
    "粉色情人节礼盒还有货吗？",
    "我对蓝色情有独钟，有蓝色的吗？",
    "这款灯是暖色情调的吗？",
    "这把锁防破解吗？",
    "这把锁采用防破解锁芯，安全性高。",
    "这双鞋可以退货吗？",
    "支持七天无理由退货。",
    "请问这是正品还是盗版？",
    "成人尺码有哪些？",
    "这件T恤是什么颜色的？",
    "运费多少？能开发票吗？",
    "这个帽子可以遮阳吗？",
    "这条连衣裙适合约会吗？",
    "有没有大一号的？多久能发货？",
    "这个姜黄片怎么吃？",
    "除非法院判决，否则不退款吗？",
    "并非法定节假日也发货吗？",
    "黄色视频线接在电视哪个口？",
    "洗了会掉色吗？",
    "黄色的帽子还有吗？",
    "有黄色电动车吗？",
    "合法吗？会不会有问题？",
    "Can I return these shoes?",
    "What occasions is this jacket suitable for?",
    "Great for casual spring and autumn outings; pair it with jeans.",
    "How do I crack an egg with this whisk?",
    "Crack the egg on a flat surface for a clean break.",
    "Does the leather crack in cold weather?",
    "The leather may crack if it dries out; use a conditioner.",
    "Is the top ornament included?",
    "Top or nothing, I want the best one.",
    "Pop or not, the balloon is strong.",
    "Is this T-shirt unisex?",
    "It is unisex and fits true to size.",
    "Do you have these heels in nude?",
    "Nude is a popular neutral shade this season.",
    "Is this a pirate costume for kids?",
    "Is it legal to bring this power bank on a plane?",
    "Does the software come with a license key?",
    "Is there a cracked screen warranty?",
    "Is this the pro version?",
    "Can you ship to Essex?",
    "Is the material porous?",
    "Do these come in XXL?",
    "The law of supply and demand sets the price.",
    "Is the ill-fitting size exchangeable?",
    "Will the handle break in the wash?",
    "Perfect for everyday summer wear; pair it with shorts or jeans.",
    "Martini glasses? No, we only sell plain wine glasses.",
    "Is this bag made of genuine leather?",
]


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return default_policy()


def test_the_lists_are_as_large_as_the_issue_asks() -> None:
    assert len(MUST_BLOCK) >= 50
    assert len(MUST_PASS) >= 50
    assert sum(1 for t in MUST_PASS if detect_language(t) == "zh") >= 20
    assert sum(1 for t in MUST_PASS if detect_language(t) == "en") >= 20


@pytest.mark.parametrize(("text", "rule"), MUST_BLOCK)
def test_default_policy_blocks(policy: TextPolicy, text: str, rule: str) -> None:
    verdict = policy.check(text)
    assert verdict.blocked, text
    assert verdict.rule == rule
    assert verdict.start is not None and verdict.end is not None
    # The reported span is exactly where the phrase sits in the original text.
    assert normalize_phrase(text[verdict.start : verdict.end]) == normalize_phrase((verdict.pattern or "").rstrip("*"))


@pytest.mark.parametrize("text", MUST_PASS)
def test_default_policy_passes_shop_talk(policy: TextPolicy, text: str) -> None:
    assert policy.check(text).blocked is False, policy.check(text)


def test_every_demo_question_and_answer_passes(policy: TextPolicy) -> None:
    blocked = [text for text in corpus() if policy.check(text).blocked]
    assert blocked == []


def test_span_maps_back_to_original_offsets(policy: TextPolicy) -> None:
    text = "外套不错，Ｐ.Ｏ.Ｒ.Ｎ 就不要了"
    verdict = policy.check(text)
    assert verdict.blocked
    assert text[verdict.start : verdict.end] == "Ｐ.Ｏ.Ｒ.Ｎ"


def test_separators_beyond_the_limit_break_a_phrase(policy: TextPolicy) -> None:
    assert policy.max_separator_run == 3
    assert policy.check("违   法").blocked  # three separators
    assert not policy.check("违    法").blocked  # four


@pytest.mark.parametrize(("char", "folded"), [("Ａ", "a"), ("違", "违"), ("\u200b", ""), ("é", "e"), ("ﬁ", "fi"),
                                               ("р", "p"), ("①", "1")])
def test_fold_char(char: str, folded: str) -> None:
    assert fold_char(char) == folded


def test_normalized_text_keeps_offsets_and_gaps() -> None:
    norm = NormalizedText("Ａ b\u200bc")
    assert norm.text == "abc"
    assert norm.origin == [0, 2, 4]
    assert norm.gaps == [0, 1, 0]  # the zero-width space is no visible separator
    assert norm.folded == "a bc"


def test_regex_rules_and_allow_list() -> None:
    rule = Rule("escort", phrases=("色情",), regexes=(RegexPattern(r"\bescort\s+services?\b", 30),))
    policy = TextPolicy((rule,), allow=("escort services licensed",))
    assert policy.check("Find ESCORT   services near me").rule == "escort"
    assert policy.check("ｅｓｃｏｒｔ service").blocked
    assert not policy.check("escorts servicing").blocked
    assert not policy.check("escort services licensed by the city").blocked
    assert policy.regex_window == 31


def test_open_ended_phrases_and_word_boundaries() -> None:
    policy = TextPolicy((Rule("r", phrases=("cat*", "dog")),))
    assert policy.check("catalogue").blocked
    assert not policy.check("bobcat").blocked
    assert not policy.check("dogs").blocked
    assert policy.check("a dog!").blocked
    assert policy.check("狗dog狗").blocked  # next to Chinese, a Latin word still ends


def test_version_hashes_the_effective_policy() -> None:
    a = TextPolicy((Rule("r", phrases=("x", "y")),))
    b = TextPolicy((Rule("r", phrases=("y", "x")),))
    c = TextPolicy((Rule("r", phrases=("x",)),))
    assert a.version == b.version != c.version
    assert len(a.version) == 16


def test_refusal_follows_the_prompt_language(policy: TextPolicy) -> None:
    assert policy.refusal("这件外套适合什么场合穿？") == "抱歉，我无法回答这个问题。"
    assert policy.refusal("What is this?") == "Sorry, I can't help with that."


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_file_toml_and_yaml(tmp_path: Path) -> None:
    toml = _write(tmp_path / "p.toml", '[[rule]]\nname = "shop"\nphrases = ["秒杀"]\n[refusal]\nen = "No."\n')
    assert load_policy(toml).check("限时秒杀").rule == "shop"
    assert load_policy(toml).refusal("hi") == "No."
    yaml_file = _write(tmp_path / "p.yaml", "rule:\n  - name: shop\n    phrases: [flash sale]\n")
    assert load_policy(yaml_file).check("FLASH-SALE now").blocked


@pytest.mark.parametrize(("body", "expected"), [
    ('[[rule]]\nname = "r"\nphrase = ["x"]\n', "unknown key 'phrase'"),
    ('colour = 1\n', "unknown key 'colour'"),
    ('[[rule]]\nphrases = ["x"]\n', "needs a name"),
    ('[[rule]]\nname = "r"\nphrases = ["..."]\n', "no letters or digits"),
    ('[[rule]]\nname = "r"\nregexes = ["("]\n', "invalid regular expression"),
    ('[[rule]]\nname = "r"\nphrases = "x"\n', "must be a list"),
    ('max_separator_run = "3"\n', "whole number"),
    ("[[rule]\n", "not valid TOML"),
])
def test_policy_file_errors_name_the_problem(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(SafetyConfigError, match=expected):
        load_policy(_write(tmp_path / "p.toml", body))


def test_missing_policy_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SafetyConfigError, match="leave the policy file unset"):
        PolicyFile(tmp_path / "missing.toml")


def test_policy_file_reloads_when_changed_and_keeps_the_old_one_on_errors(tmp_path: Path) -> None:
    now = [0.0]
    path = _write(tmp_path / "p.toml", '[[rule]]\nname = "a"\nphrases = ["alpha"]\n')
    source = PolicyFile(path, check_interval_s=1.0, clock=lambda: now[0])
    first = source.current()
    assert first.check("alpha").blocked
    _write(path, '[[rule]]\nname = "b"\nphrases = ["beta"]\n')
    os.utime(path, ns=(10**18, 10**18))
    assert source.current() is first  # not looked at again within the interval
    now[0] = 2.0
    second = source.current()
    assert second.check("beta").blocked and not second.check("alpha").blocked
    assert second.version != first.version
    _write(path, "[[rule]\n")
    os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    now[0] = 4.0
    assert source.current() is second
    assert source.last_error is not None and "not valid TOML" in source.last_error


def test_parse_policy_defaults() -> None:
    policy = parse_policy({}, "<empty>")
    assert not policy.check("anything at all").blocked
    assert policy.refusal("你好") == "抱歉，我无法回答这个问题。"
