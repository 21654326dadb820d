"""The words of the built-in corpus, per language, and the class of every word.

A sentence describes a picture (what it shows: counts, sizes, colours, shapes, where the groups are,
sometimes the background) and often says something no picture shows (who made or saw it, when, where,
what someone thinks of it). Every word form the generator can say belongs to exactly one class
(:func:`word_classes`), so a report can split error rates into words an image can help with and the rest:

=============  ==========  =========================================================================
class          depicted    words
=============  ==========  =========================================================================
count          yes         1..6
size           yes         big, small
colour         yes         eleven colours (also the background's colour)
shape          yes         eighteen shapes and objects, singular and plural
position       yes         left, right, top, bottom, middle
background     yes         "background"
name           no          people's names
time           no          today, yesterday, the days of the week, ...
place          no          at school, in the market, ...
verb           no          drew, brought, sent, ...
comment        no          "this is very beautiful", "we will sell it", ...
function       no          "in the picture", "there is/are", "and", postpositions
=============  ==========  =========================================================================

Adjectives agree with their noun: ``forms`` are (masculine singular, masculine plural, feminine singular,
feminine plural); in Kannada all four are the same word.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

DEPICTED = ("count", "size", "colour", "shape", "position", "background")
CLASSES = DEPICTED + ("name", "time", "place", "verb", "comment", "function")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey")
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond", "hexagon", "rectangle", "moon", "cross",
          "arrow", "ring", "flower", "leaf", "house", "tree", "fish", "boat")
SIZES = ("big", "small")
POSITIONS = ("left", "right", "top", "bottom", "middle")


def _inv(word: str) -> tuple[str, str, str, str]:
    return (word, word, word, word)


@dataclass(frozen=True)
class Language:
    name: str
    code: str  # espeak-ng voice
    numbers: tuple[str, ...]  # 1..6
    colours: dict[str, tuple[str, str, str, str]]  # colour -> forms (m.sg, m.pl, f.sg, f.pl)
    sizes: dict[str, tuple[str, str, str, str]]
    shapes: dict[str, tuple[str, str, str]]  # shape -> (singular, plural, gender "m"/"f")
    conj: str  # "and"
    positions: dict[str, str]  # where a group is
    in_picture: str  # "in the picture"
    copula: tuple[str, str]  # "there is" / "there are"
    background: str  # "on a {colour} background"; the colour takes the feminine form where that matters
    background_gender: str
    context: str  # "in the picture {name} {verb}" — {when} is the optional time or place
    names: tuple[str, ...]
    verbs: tuple[str, ...]
    times: tuple[str, ...]
    places: tuple[str, ...]
    comments: tuple[str, ...]
    function: tuple[str, ...]  # words of the templates above (postpositions, particles)


KANNADA = Language(
    name="kannada", code="kn",
    numbers=("ಒಂದು", "ಎರಡು", "ಮೂರು", "ನಾಲ್ಕು", "ಐದು", "ಆರು"),
    colours={c: _inv(w) for c, w in zip(COLOURS, (
        "ಕೆಂಪು", "ನೀಲಿ", "ಹಸಿರು", "ಹಳದಿ", "ಕಪ್ಪು", "ಬಿಳಿ", "ಕಿತ್ತಳೆ", "ನೇರಳೆ", "ಗುಲಾಬಿ", "ಕಂದು", "ಬೂದು"))},
    sizes={"big": _inv("ದೊಡ್ಡ"), "small": _inv("ಸಣ್ಣ")},
    shapes={s: (sg, pl, "m") for s, (sg, pl) in zip(SHAPES, (
        ("ವೃತ್ತ", "ವೃತ್ತಗಳು"), ("ಚೌಕ", "ಚೌಕಗಳು"), ("ತ್ರಿಕೋನ", "ತ್ರಿಕೋನಗಳು"), ("ನಕ್ಷತ್ರ", "ನಕ್ಷತ್ರಗಳು"),
        ("ಹೃದಯ", "ಹೃದಯಗಳು"), ("ವಜ್ರ", "ವಜ್ರಗಳು"), ("ಷಡ್ಭುಜ", "ಷಡ್ಭುಜಗಳು"), ("ಆಯತ", "ಆಯತಗಳು"),
        ("ಚಂದ್ರ", "ಚಂದ್ರಗಳು"), ("ಶಿಲುಬೆ", "ಶಿಲುಬೆಗಳು"), ("ಬಾಣ", "ಬಾಣಗಳು"), ("ಉಂಗುರ", "ಉಂಗುರಗಳು"),
        ("ಹೂವು", "ಹೂವುಗಳು"), ("ಎಲೆ", "ಎಲೆಗಳು"), ("ಮನೆ", "ಮನೆಗಳು"), ("ಮರ", "ಮರಗಳು"), ("ಮೀನು", "ಮೀನುಗಳು"),
        ("ದೋಣಿ", "ದೋಣಿಗಳು")))},
    conj="ಮತ್ತು",
    positions={"left": "ಎಡಗಡೆ", "right": "ಬಲಗಡೆ", "top": "ಮೇಲೆ", "bottom": "ಕೆಳಗೆ", "middle": "ಮಧ್ಯದಲ್ಲಿ"},
    in_picture="ಚಿತ್ರದಲ್ಲಿ", copula=("ಇದೆ", "ಇವೆ"),
    background="{colour} ಹಿನ್ನೆಲೆಯಲ್ಲಿ", background_gender="m",
    context="{name} {when} {verb} ಚಿತ್ರದಲ್ಲಿ",
    names=("ರವಿ", "ಸೀತಾ", "ರಾಮು", "ಲಕ್ಷ್ಮಿ", "ಅನಿಲ್", "ಗೀತಾ", "ಸುರೇಶ್", "ಕಾವ್ಯ", "ಅರ್ಜುನ್", "ಮೀನಾ", "ಕಿರಣ್",
           "ಪೂಜಾ", "ವಿಜಯ್", "ಆಶಾ", "ಮೋಹನ್", "ರಾಧಾ", "ಪ್ರಕಾಶ್", "ಶಾಂತಿ", "ಗಣೇಶ್", "ದಿವ್ಯಾ", "ಮಹೇಶ್", "ಉಷಾ",
           "ನವೀನ್", "ರೇಖಾ", "ಸುನಿಲ್", "ಅಂಜಲಿ", "ರಮೇಶ್", "ನಂದಿನಿ", "ಸಂಜಯ್", "ಪ್ರಿಯಾ", "ಹರೀಶ್", "ದೀಪಾ", "ಮನೋಜ್",
           "ಸ್ವಾತಿ", "ರಾಹುಲ್", "ಸ್ನೇಹಾ", "ಅಜಯ್", "ವಾಣಿ", "ಕಾರ್ತಿಕ್", "ಲತಾ", "ಶ್ರೀನಿವಾಸ್", "ಭಾರತಿ", "ಗೋಪಾಲ್", "ಸರೋಜಾ",
           "ವೆಂಕಟೇಶ್", "ಮಂಜುಳಾ", "ಶಿವು", "ಪದ್ಮಾ", "ನಾಗರಾಜ್", "ಸುಮಾ", "ಚೇತನ್", "ಅರ್ಚನಾ", "ಪ್ರವೀಣ್", "ಶೋಭಾ",
           "ಯೋಗೇಶ್", "ಕಮಲಾ", "ದಿನೇಶ್", "ಭವ್ಯಾ", "ಉಮೇಶ್", "ಸೌಮ್ಯಾ", "ರಾಜು", "ಮಾಲತಿ", "ಬಸವರಾಜ್", "ಜ್ಯೋತಿ",
           "ಮಧು", "ರಶ್ಮಿ", "ಸತೀಶ್", "ವೀಣಾ", "ಕೃಷ್ಣ", "ಅನಿತಾ"),
    verbs=("ಬಿಡಿಸಿದ", "ನೋಡಿದ", "ತಂದ", "ಕಳುಹಿಸಿದ", "ತೋರಿಸಿದ", "ಖರೀದಿಸಿದ", "ಮಾಡಿದ", "ಮುದ್ರಿಸಿದ"),
    times=("ಇಂದು", "ನಿನ್ನೆ", "ಮೊನ್ನೆ", "ಬೆಳಿಗ್ಗೆ", "ಸಂಜೆ", "ರಾತ್ರಿ", "ಸೋಮವಾರ", "ಮಂಗಳವಾರ", "ಬುಧವಾರ",
           "ಗುರುವಾರ", "ಶುಕ್ರವಾರ", "ಶನಿವಾರ", "ಭಾನುವಾರ"),
    places=("ಶಾಲೆಯಲ್ಲಿ", "ಮನೆಯಲ್ಲಿ", "ಮಾರುಕಟ್ಟೆಯಲ್ಲಿ", "ತೋಟದಲ್ಲಿ", "ಹಳ್ಳಿಯಲ್ಲಿ", "ನಗರದಲ್ಲಿ", "ತರಗತಿಯಲ್ಲಿ",
            "ಗ್ರಂಥಾಲಯದಲ್ಲಿ", "ದೇವಸ್ಥಾನದಲ್ಲಿ", "ನಿಲ್ದಾಣದಲ್ಲಿ", "ಕಚೇರಿಯಲ್ಲಿ", "ಜಾತ್ರೆಯಲ್ಲಿ", "ಆಸ್ಪತ್ರೆಯಲ್ಲಿ",
            "ಬಸ್ಸಿನಲ್ಲಿ", "ಅಂಗಡಿಯಲ್ಲಿ", "ಉದ್ಯಾನದಲ್ಲಿ", "ಮೈದಾನದಲ್ಲಿ", "ಬೆಂಗಳೂರಿನಲ್ಲಿ", "ಮೈಸೂರಿನಲ್ಲಿ"),
    comments=("ಇದು ತುಂಬಾ ಸುಂದರವಾಗಿದೆ", "ನನಗೆ ಇದು ಇಷ್ಟ", "ಇದು ಹೊಸದು", "ಇದು ಹಳೆಯದು", "ಸ್ವಲ್ಪ ಮಸುಕಾಗಿದೆ",
              "ಬಣ್ಣಗಳು ಚೆನ್ನಾಗಿವೆ", "ನೋಡಿ ಖುಷಿಯಾಯಿತು", "ಮಕ್ಕಳಿಗೆ ಇಷ್ಟವಾಯಿತು", "ಎಲ್ಲರೂ ಹೊಗಳಿದರು",
              "ಇದನ್ನು ಗೋಡೆಗೆ ಹಾಕುತ್ತೇವೆ", "ನಾಳೆ ಮತ್ತೆ ನೋಡೋಣ", "ಇದು ಪುಸ್ತಕದಲ್ಲಿ ಇತ್ತು", "ಅಮ್ಮ ಜೋಪಾನವಾಗಿ ಇಟ್ಟರು",
              "ಇದು ತುಂಬಾ ಅಗ್ಗ", "ಅಜ್ಜಿಗೆ ತೋರಿಸಬೇಕು", "ಇದು ಉಡುಗೊರೆ", "ಇದರ ಚೌಕಟ್ಟು ಮುರಿದಿದೆ",
              "ನಾವು ಇದನ್ನು ಮಾರುತ್ತೇವೆ", "ಈಗ ಇದು ನಮ್ಮದು", "ಇದು ಬೇಗ ಮುಗಿಯಿತು"),
    function=(),
)

HINDI = Language(
    name="hindi", code="hi",
    numbers=("एक", "दो", "तीन", "चार", "पाँच", "छह"),
    colours=dict(
        red=_inv("लाल"), blue=("नीला", "नीले", "नीली", "नीली"), green=("हरा", "हरे", "हरी", "हरी"),
        yellow=("पीला", "पीले", "पीली", "पीली"), black=("काला", "काले", "काली", "काली"), white=_inv("सफ़ेद"),
        orange=_inv("नारंगी"), purple=_inv("बैंगनी"), pink=_inv("गुलाबी"), brown=("भूरा", "भूरे", "भूरी", "भूरी"),
        grey=_inv("स्लेटी")),
    sizes={"big": ("बड़ा", "बड़े", "बड़ी", "बड़ी"), "small": ("छोटा", "छोटे", "छोटी", "छोटी")},
    shapes=dict(
        circle=("गोला", "गोले", "m"), square=("वर्ग", "वर्ग", "m"), triangle=("त्रिकोण", "त्रिकोण", "m"),
        star=("तारा", "तारे", "m"), heart=("दिल", "दिल", "m"), diamond=("हीरा", "हीरे", "m"),
        hexagon=("षट्भुज", "षट्भुज", "m"), rectangle=("आयत", "आयत", "m"), moon=("चाँद", "चाँद", "m"),
        cross=("क्रॉस", "क्रॉस", "m"), arrow=("तीर", "तीर", "m"), ring=("अंगूठी", "अंगूठियाँ", "f"),
        flower=("फूल", "फूल", "m"), leaf=("पत्ता", "पत्ते", "m"), house=("घर", "घर", "m"), tree=("पेड़", "पेड़", "m"),
        fish=("मछली", "मछलियाँ", "f"), boat=("नाव", "नावें", "f")),
    conj="और",
    positions={"left": "बाईं ओर", "right": "दाईं ओर", "top": "ऊपर", "bottom": "नीचे", "middle": "बीच में"},
    in_picture="चित्र में", copula=("है", "हैं"),
    background="{colour} पृष्ठभूमि पर", background_gender="f",
    context="{when} {name} के {verb} चित्र में",
    names=("रवि", "सीता", "रामू", "लक्ष्मी", "अनिल", "गीता", "सुरेश", "काव्या", "अर्जुन", "मीना", "किरण", "पूजा",
           "विजय", "आशा", "मोहन", "राधा", "प्रकाश", "शांति", "गणेश", "दिव्या", "महेश", "उषा", "नवीन", "रेखा",
           "सुनील", "अंजलि", "रमेश", "नंदिनी", "संजय", "प्रिया", "हरीश", "दीपा", "मनोज", "स्वाति", "राहुल", "स्नेहा",
           "अजय", "वाणी", "कार्तिक", "लता", "श्रीनिवास", "भारती", "गोपाल", "सरोज", "वेंकटेश", "मंजुला", "शिव",
           "पद्मा", "नागराज", "सुमा", "चेतन", "अर्चना", "प्रवीण", "शोभा", "योगेश", "कमला", "दिनेश", "भव्या",
           "उमेश", "सौम्या", "राजू", "मालती", "बसवराज", "ज्योति", "मधु", "रश्मि", "सतीश", "वीणा", "कृष्ण", "अनीता"),
    verbs=("बनाए", "लाए", "भेजे", "दिखाए", "खरीदे", "खींचे", "रंगे", "छापे"),
    times=("आज", "कल", "परसों", "सुबह", "शाम", "रात", "सोमवार", "मंगलवार", "बुधवार", "गुरुवार", "शुक्रवार",
           "शनिवार", "रविवार"),
    places=("स्कूल में", "बाज़ार में", "बगीचे में", "गाँव में", "शहर में", "कक्षा में", "पुस्तकालय में",
            "मंदिर में", "स्टेशन पर", "दफ़्तर में", "मेले में", "अस्पताल में", "बस में", "दुकान पर", "पार्क में",
            "मैदान में", "दिल्ली में", "पटना में", "कमरे में"),
    comments=("यह बहुत सुंदर है", "मुझे यह पसंद है", "यह नया है", "यह पुराना है", "थोड़ा धुंधला है",
              "रंग बहुत अच्छे हैं", "देखकर खुशी हुई", "बच्चों को पसंद आया", "सबने तारीफ़ की",
              "इसे दीवार पर लगाएँगे", "फिर से देखेंगे", "यह किताब में छपा था", "माँ ने संभालकर रखा",
              "यह बहुत सस्ता था", "दादी को दिखाना है", "यह उपहार है", "इसका फ़्रेम टूटा है", "हम इसे बेचेंगे",
              "अब यह हमारा है", "यह जल्दी बन गया"),
    # postpositions and particles of the templates: "में", "पर" and "के" also end places and comments
    function=("में", "पर", "के", "है", "हैं"),
)

LANGUAGES: dict[str, Language] = {"kannada": KANNADA, "hindi": HINDI}
ALIASES = {lang.code: name for name, lang in LANGUAGES.items()}


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def word_classes(lang: Language) -> dict[str, str]:
    """Every word form the generator can say → its class (see the module docstring). Raises
    ``ValueError`` when one word would belong to two classes (other than a function word)."""
    entries: list[tuple[str, str]] = [(w, "count") for w in lang.numbers]
    entries += [(w, "colour") for forms in lang.colours.values() for w in forms]
    entries += [(w, "size") for forms in lang.sizes.values() for w in forms]
    entries += [(w, "shape") for sg, pl, _ in lang.shapes.values() for w in (sg, pl)]
    entries += [(w, "position") for phrase in lang.positions.values() for w in phrase.split()]
    entries += [(w, "background") for w in lang.background.replace("{colour}", "").split()]
    entries += [(w, "name") for w in lang.names]
    entries += [(w, "verb") for w in lang.verbs]
    entries += [(w, "time") for w in lang.times]
    entries += [(w, "place") for phrase in lang.places for w in phrase.split()]
    entries += [(w, "comment") for phrase in lang.comments for w in phrase.split()]
    template = f"{lang.in_picture} {lang.conj} {' '.join(lang.copula)} {lang.context}"
    entries += [(w, "function") for w in template.split() if not w.startswith("{")]
    entries += [(w, "function") for w in lang.function]
    out: dict[str, str] = {}
    function = {nfc(w) for w, c in entries if c == "function"}
    for word, cls in entries:
        word = nfc(word)
        if word in function:
            out[word] = "function"
            continue
        if out.get(word, cls) != cls:
            raise ValueError(f"{lang.name}: the word {word!r} is both {out[word]} and {cls}")
        out[word] = cls
    return out
