"""The fact table behind the ``facts`` task: (relation template, subject -> answer) pairs.

Provenance: written out by the circuitdiff project (2026) from common general knowledge,
as a stand-in for the reference study's SimpleQA items, which are long questions with
multi-word answers. Every fact was chosen to be simple, unambiguous and stable: capitals
only where the country has one undisputed capital city that is one word (no Bern, Kyiv,
Jerusalem, Astana, Amsterdam/The Hague), languages only where one language is what most
people there speak, continents only for countries wholly on one continent (no Russia,
Turkey, Egypt), currencies that have not changed in decades (no Croatia), opposites only
in the direction that has one answer ("left" -> "right", never "right" -> ?). Answers are
common words; every subject and answer is one GPT-2 token (with a leading space) and one
BERT uncased word (which left out, e.g., Nairobi, Hanoi, peso, rupee, foal), so the study's
models take every item; ``tests/test_facts.py`` re-checks it against the real vocabularies.
"""

from __future__ import annotations

RELATIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "capital": ("The capital of {} is", (
        ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
        ("Japan", "Tokyo"), ("Russia", "Moscow"), ("China", "Beijing"), ("Egypt", "Cairo"),
        ("Greece", "Athens"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Portugal", "Lisbon"),
        ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
        ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Thailand", "Bangkok"), ("Cuba", "Havana"),
        ("Peru", "Lima"), ("Chile", "Santiago"), ("Iraq", "Baghdad"), ("Iran", "Tehran"),
        ("Afghanistan", "Kabul"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Indonesia", "Jakarta"),
        ("Philippines", "Manila"), ("Belgium", "Brussels"), ("Denmark", "Copenhagen"), ("Turkey", "Ankara"),
        ("England", "London"), ("Australia", "Canberra"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
        ("Pakistan", "Islamabad"), ("Jamaica", "Kingston"), ("Libya", "Tripoli"),
    )),
    "language": ("People in {} speak", (
        ("France", "French"), ("Germany", "German"), ("Italy", "Italian"), ("Spain", "Spanish"),
        ("Portugal", "Portuguese"), ("Russia", "Russian"), ("Japan", "Japanese"), ("Greece", "Greek"),
        ("Turkey", "Turkish"), ("Poland", "Polish"), ("Sweden", "Swedish"), ("Norway", "Norwegian"),
        ("Denmark", "Danish"), ("Netherlands", "Dutch"), ("Hungary", "Hungarian"), ("Brazil", "Portuguese"),
        ("Mexico", "Spanish"), ("Argentina", "Spanish"), ("Egypt", "Arabic"), ("Israel", "Hebrew"),
        ("Thailand", "Thai"), ("Vietnam", "Vietnamese"), ("Korea", "Korean"), ("China", "Chinese"),
        ("Romania", "Romanian"), ("Austria", "German"), ("Chile", "Spanish"), ("Colombia", "Spanish"),
        ("Cuba", "Spanish"), ("Iraq", "Arabic"), ("Syria", "Arabic"), ("Jordan", "Arabic"),
        ("Indonesia", "Indonesian"), ("Iceland", "Icelandic"), ("England", "English"),
        ("Australia", "English"), ("Croatia", "Croatian"), ("Serbia", "Serbian"), ("Bulgaria", "Bulgarian"),
    )),
    "continent": ("The country of {} is located in", (
        ("France", "Europe"), ("Germany", "Europe"), ("Italy", "Europe"), ("Spain", "Europe"),
        ("Portugal", "Europe"), ("Poland", "Europe"), ("Sweden", "Europe"), ("Norway", "Europe"),
        ("Finland", "Europe"), ("Denmark", "Europe"), ("Austria", "Europe"), ("Hungary", "Europe"),
        ("Greece", "Europe"), ("Ireland", "Europe"), ("Belgium", "Europe"), ("Romania", "Europe"),
        ("Bulgaria", "Europe"), ("Croatia", "Europe"), ("Serbia", "Europe"), ("Switzerland", "Europe"),
        ("Japan", "Asia"), ("China", "Asia"), ("India", "Asia"), ("Thailand", "Asia"), ("Vietnam", "Asia"),
        ("Korea", "Asia"), ("Pakistan", "Asia"), ("Nepal", "Asia"), ("Iran", "Asia"), ("Iraq", "Asia"),
        ("Syria", "Asia"), ("Afghanistan", "Asia"), ("Mongolia", "Asia"), ("Cambodia", "Asia"),
        ("Bangladesh", "Asia"), ("Malaysia", "Asia"), ("Kenya", "Africa"), ("Nigeria", "Africa"),
        ("Ghana", "Africa"), ("Ethiopia", "Africa"), ("Morocco", "Africa"), ("Algeria", "Africa"),
        ("Tunisia", "Africa"), ("Libya", "Africa"), ("Sudan", "Africa"), ("Senegal", "Africa"),
        ("Uganda", "Africa"), ("Zimbabwe", "Africa"), ("Angola", "Africa"), ("Somalia", "Africa"),
        ("Rwanda", "Africa"),
    )),
    "currency": ("The currency of {} is the", (
        ("Japan", "yen"), ("England", "pound"), ("Korea", "won"), ("Canada", "dollar"),
        ("Australia", "dollar"), ("France", "euro"), ("Germany", "euro"), ("Italy", "euro"),
        ("Spain", "euro"), ("Greece", "euro"), ("Ireland", "euro"), ("Portugal", "euro"),
        ("Austria", "euro"), ("Finland", "euro"), ("Belgium", "euro"), ("Egypt", "pound"),
    )),
    "opposite": ("The opposite of {} is", (
        ("hot", "cold"), ("cold", "hot"), ("up", "down"), ("down", "up"), ("yes", "no"), ("day", "night"),
        ("night", "day"), ("black", "white"), ("white", "black"), ("good", "bad"), ("bad", "good"),
        ("happy", "sad"), ("sad", "happy"), ("rich", "poor"), ("poor", "rich"), ("win", "lose"),
        ("wet", "dry"), ("dry", "wet"), ("early", "late"), ("late", "early"), ("true", "false"),
        ("false", "true"), ("full", "empty"), ("empty", "full"), ("push", "pull"), ("pull", "push"),
        ("strong", "weak"), ("weak", "strong"), ("inside", "outside"), ("outside", "inside"),
        ("buy", "sell"), ("sell", "buy"), ("top", "bottom"), ("bottom", "top"), ("north", "south"),
        ("south", "north"), ("east", "west"), ("west", "east"), ("first", "last"), ("before", "after"),
        ("after", "before"), ("always", "never"), ("never", "always"), ("love", "hate"), ("hate", "love"),
        ("war", "peace"), ("peace", "war"), ("fast", "slow"), ("slow", "fast"), ("left", "right"),
        ("thick", "thin"), ("heavy", "light"), ("dark", "light"), ("high", "low"), ("low", "high"),
        ("alive", "dead"), ("dead", "alive"), ("clean", "dirty"), ("dirty", "clean"),
        ("cheap", "expensive"), ("expensive", "cheap"), ("friend", "enemy"), ("young", "old"),
        ("above", "below"), ("below", "above"), ("future", "past"), ("summer", "winter"),
        ("winter", "summer"), ("positive", "negative"), ("negative", "positive"), ("maximum", "minimum"),
        ("minimum", "maximum"), ("increase", "decrease"), ("decrease", "increase"), ("success", "failure"),
        ("asleep", "awake"), ("awake", "asleep"),
    )),
    "young": ("A young {} is called a", (
        ("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("sheep", "lamb"), ("bear", "cub"),
        ("goat", "kid"),
    )),
    "color": ("The color of {} is", (
        ("grass", "green"), ("snow", "white"), ("blood", "red"), ("coal", "black"), ("milk", "white"),
        ("chocolate", "brown"), ("bananas", "yellow"), ("tomatoes", "red"), ("salt", "white"),
    )),
    "legs": ("The number of legs of a {} is", (
        ("spider", "eight"), ("dog", "four"), ("cat", "four"), ("horse", "four"), ("bird", "two"),
        ("bee", "six"), ("chicken", "two"), ("cow", "four"), ("beetle", "six"), ("duck", "two"),
        ("fly", "six"), ("sheep", "four"),
    )),
}
"""relation -> (template with one {} for the subject, (subject, answer) pairs)."""
