"""Word lists shared by the built-in task generators.

Every word here is a single token in both tokenizers the reference study uses: GPT-2 BPE
with a leading space (" Mary") and BERT uncased WordPiece as a whole word ("mary").
That keeps answers single tokens and corrupted prompts the same length as clean ones;
``tests/test_tasks.py`` re-checks it against the real vocabularies.
"""

from __future__ import annotations

NAMES: tuple[str, ...] = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Paul", "Kevin",
    "Lisa", "Michael", "Sarah", "George", "Emma", "Anna", "Kate", "David", "Steve", "Jack",
    "Mark", "Mike", "Alex", "Ben", "Sam", "Eric", "Chris", "Brian", "Adam", "Scott",
    "Ryan", "Jason", "Matt", "Andrew", "Rachel", "Laura", "Jessica", "Julia", "Alice", "Bob",
    "Carol", "Grace", "Henry", "Frank", "Peter", "Joseph", "Daniel", "Thomas", "Richard", "Robert",
    "William", "Charles", "Anthony", "Jennifer", "Linda", "Susan", "Helen", "Nancy", "Karen", "Betty",
    "Sandra", "Ruth", "Maria", "Jane", "Rose", "Victoria", "Claire", "Simon", "Edward", "Patrick",
    "Ian", "Luke", "Nick", "Joe", "Tim", "Max", "Leo", "Oliver", "Jacob", "Noah",
    "Ethan", "Lucas", "Sophie", "Olivia", "Lily", "Hannah", "Diana", "Anne", "Sara", "Tony",
    "Roger", "Harry", "Carl", "Fred", "Jeff", "Greg", "Bruce", "Chloe", "Justin",
)
"""First names for IOI and the numerals "born" template."""

PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
    "park", "bank", "church", "library", "river", "beach", "market", "hotel", "kitchen",
)

OBJECTS: tuple[str, ...] = (
    "drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack", "apple",
    "ball", "book", "bag", "hat", "key", "pen", "cup", "box", "car", "bike", "coat", "phone",
    "letter", "flower", "cake", "gift", "watch", "toy", "map", "card",
)
"""Lower-case objects for IOI ("gave a drink to")."""

ITEMS: tuple[str, ...] = (
    "Van", "Hat", "Ring", "Desk", "Sun", "Car", "Box", "Key", "Pen", "Book", "Ball", "Bed",
    "Tree", "Bell", "Map", "Rock", "Ship", "Star", "Fish", "Bird", "Hand", "Shop", "Card",
    "Toy", "Watch", "Bus", "Bear", "Chair", "Table", "Clock", "Phone", "Song", "Game",
)
"""Capitalised objects that open the numerals sentences ("Van done in 1."); also single
GPT-2 tokens without the leading space, since the first one starts the text."""

WEEKDAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
NUMBER_WORDS: tuple[str, ...] = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)
"""one..twenty; NUMBER_WORDS[i] is i + 1. (Some are two GPT-2 tokens without a leading
space, so generators never put one at the very start of a prompt.)"""

NUMBERS: tuple[str, ...] = tuple(str(i) for i in range(1, 100))
"""1..99: " 1".." 99" are single GPT-2 tokens (" 0".." 199" are) and whole BERT words."""

EVENT_NOUNS: tuple[str, ...] = (
    "war", "strike", "expedition", "drought", "famine", "trial", "dynasty", "siege", "reign",
    "crisis", "flood", "journey", "project", "campaign", "occupation", "conflict",
    "rebellion", "battle", "era", "tour", "marriage", "friendship", "program", "exhibition",
)
"""Greater-than subjects ("The war lasted from the year 1732 ...")."""

COMMON_WORDS: tuple[str, ...] = (
    "apple", "river", "chair", "house", "water", "light", "green", "music", "paper", "table",
    "window", "money", "story", "child", "world", "night", "horse", "stone", "garden", "dream",
    "heart", "voice", "plant", "silver", "summer", "winter", "doctor", "market", "letter",
    "island", "forest", "bridge", "sugar", "cloud", "mountain", "engine", "glass", "coffee",
    "animal", "planet", "camera", "rabbit", "bottle", "button", "circle", "dollar", "finger",
    "hammer", "jacket", "kitchen", "ladder", "mirror", "needle", "orange", "pencil", "pocket",
    "rocket", "shadow", "spider", "ticket", "tiger", "tunnel", "violin", "wallet",
)
"""Lower-case common words for the induction task's random sequences."""
