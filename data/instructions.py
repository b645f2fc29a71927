"""EgoIT-style instructions from atomic descriptions: a tiny sentence parser plus templates.

The parser understands the two sentence shapes the simulator emits and that are common in the
real Ego-Exo4D atomic descriptions::

    C <verb>s [up|down|...] the [<colour>] <object>[ in|on|into|... the [<colour>] <object>].
    C turns left.  /  C turns right.

A parsed sentence gives several question/answer pairs (what am I doing, what did I just <verb>,
what am I holding, where am I putting it, which way am I turning) with the verb and object kept
as separate fields, so evaluation can score "names the right verb and object". Anything else
gets one generic "What am I doing?" whose answer is the description in the first person
("C wipes the table with a cloth." -> "I am wiping the table with a cloth."), or nothing if it
cannot be put in the first person safely.

"C" is the Ego-Exo4D token for the camera wearer; :func:`rewrite_wearer` replaces it for the
clip text shown to the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exo2ego_edge.prompt import DOING_QUESTION, TURN_QUESTION

COLOURS = frozenset(
    "red green blue yellow orange purple pink white black grey gray brown silver gold".split()
)
PARTICLES = ("up", "down", "out", "off", "away", "back")
# Longest first so "next to" wins over "to"-less alternatives in the regex.
PLACE_PREPS = ("next to", "into", "onto", "inside", "under", "beside", "from", "in", "on")
# Verbs after which the object is (still) in the wearer's hand.
HOLDING_VERBS = frozenset({"pick up", "hold", "grab", "take", "take out", "lift", "carry"})

_IRREGULAR_BASE = {"is": "be", "has": "have", "does": "do", "goes": "go"}
_IRREGULAR_ING = {"be": "being", "see": "seeing", "lie": "lying", "die": "dying", "tie": "tying"}
# Final syllables whose consonant is NOT doubled although they look like CVC words.
_NO_DOUBLE = frozenset({"open", "visit", "enter", "listen", "offer", "happen", "order"})

# Words that end a noun phrase: "the table with a cloth" is not an object the templates can use.
_STOP = PLACE_PREPS + (
    "with", "a", "an", "the", "of", "to", "at", "and", "then", "using", "by", "for", "while"
)
_WORD = r"(?!(?:%s)\b)[a-z][a-z-]*" % "|".join(w.replace(" ", r"\s") for w in _STOP)
_NP = rf"{_WORD}(?: {_WORD}){{0,3}}"
_ACTION_RE = re.compile(
    rf"^C (?P<verb>[a-z]+s)(?: (?P<particle>{'|'.join(PARTICLES)}))? the (?P<np>{_NP})"
    rf"(?: (?P<prep>{'|'.join(PLACE_PREPS)}) the (?P<np2>{_NP}))?\s*\.?$"
)
_TURN_RE = re.compile(r"^C turns (?P<dir>left|right)\s*\.?$")
_WEARER_RE = re.compile(r"(?<![\w'’-])C(?![\w-])")
_GENERIC_RE = re.compile(r"^C (?P<verb>[a-z]+)\b(?P<rest>.*)$")


@dataclass(frozen=True)
class Action:
    """What a parsed description says the camera wearer did."""

    verb: str  # base form with particle: "pick up", "turn"
    verb_ing: str  # "picking up"
    object: str | None  # head noun phrase without colour: "cup", "cutting board"; None for turns
    colour: str | None = None
    place_prep: str | None = None  # "in" for "... in the blue bowl"
    place_object: str | None = None
    place_colour: str | None = None
    direction: str | None = None  # "left"/"right" for turns

    @property
    def object_phrase(self) -> str:
        return _np(self.colour, self.object)

    @property
    def place_phrase(self) -> str:
        if not self.place_prep:
            return ""
        return f"{self.place_prep} {_np(self.place_colour, self.place_object)}"


@dataclass(frozen=True)
class Instruction:
    """One question/answer pair about an ego clip."""

    question: str
    answer: str
    verb: str | None
    object: str | None
    template: str  # which template produced it: doing/just/holding/where/turn/generic


# ----------------------------------------------------------------------------- verbs


def base_form(verb_s: str) -> str:
    """Third-person singular -> base form: picks->pick, washes->wash, carries->carry."""
    v = verb_s.lower()
    if v in _IRREGULAR_BASE:
        return _IRREGULAR_BASE[v]
    if v.endswith("ies") and len(v) > 4:
        return v[:-3] + "y"
    if v.endswith(("sses", "shes", "ches", "xes", "zzes", "oes")):
        return v[:-2]
    if v.endswith("s") and not v.endswith("ss"):
        return v[:-1]
    return v


def ing_form(base: str) -> str:
    """Base form -> present participle: pick->picking, place->placing, put->putting."""
    if base in _IRREGULAR_ING:
        return _IRREGULAR_ING[base]
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")) and len(base) > 2:
        return base[:-1] + "ing"
    vowels = "aeiou"
    # Double the final consonant of a one-vowel-group CVC word: put->putting, stir->stirring.
    if (
        len(base) >= 3
        and base not in _NO_DOUBLE
        and base[-1] not in vowels + "wxy"
        and base[-2] in vowels
        and base[-3] not in vowels
        and len(re.findall(r"[aeiou]+", base)) == 1
    ):
        return base + base[-1] + "ing"
    return base + "ing"


def _phrase_ing(verb: str) -> str:
    head, _, particle = verb.partition(" ")
    return ing_form(head) + (f" {particle}" if particle else "")


def _np(colour: str | None, obj: str | None) -> str:
    return "the " + " ".join(w for w in (colour, obj) if w)


def _split_colour(np: str) -> tuple[str | None, str]:
    words = np.split()
    if len(words) > 1 and words[0] in COLOURS:
        return words[0], " ".join(words[1:])
    return None, np


# ----------------------------------------------------------------------------- parsing


def parse_description(text: str) -> Action | None:
    """Parse one of the known sentence shapes (see module doc); None if it is not one."""
    text = " ".join(text.split())
    m = _TURN_RE.match(text)
    if m:
        return Action(verb="turn", verb_ing="turning", object=None, direction=m["dir"])
    m = _ACTION_RE.match(text)
    if not m:
        return None
    verb = base_form(m["verb"]) + (f" {m['particle']}" if m["particle"] else "")
    colour, obj = _split_colour(m["np"])
    place_colour = place_obj = None
    if m["np2"]:
        place_colour, place_obj = _split_colour(m["np2"])
    return Action(
        verb=verb,
        verb_ing=_phrase_ing(verb),
        object=obj,
        colour=colour,
        place_prep=m["prep"],
        place_object=place_obj,
        place_colour=place_colour,
    )


def first_person(text: str) -> str | None:
    """"C <verb>s <rest>" -> "I am <verb>ing <rest>"; None if that cannot be done safely.

    Refuses when the wearer appears again later in the sentence (a second clause about C would
    need its own rewrite) or when the sentence does not start with "C <verb>s".
    """
    text = " ".join(text.split())
    m = _GENERIC_RE.match(text)
    if not m:
        return None
    verb, rest = m["verb"], m["rest"]
    if not verb.endswith("s") or _WEARER_RE.search(rest):
        return None
    base = base_form(verb)
    if base == "be":
        head = "I am"
    elif base == "have":
        head = "I have"
    else:
        head = f"I am {ing_form(base)}"
    rest = rest.rstrip()
    if not rest.endswith((".", "!", "?")):
        rest += "."
    return head + rest


def rewrite_wearer(text: str, wearer: str = "the camera wearer") -> str:
    """Replace the standalone token "C" with ``wearer``, capitalised at a sentence start.

    Only the whole word C is replaced ("C picks", "hands C a", "C's"), never a C inside a word
    ("Cup", "ABC", "C-shaped").
    """

    def sub(m: re.Match[str]) -> str:
        before = text[: m.start()].rstrip()
        at_start = not before or before[-1] in ".!?"
        return wearer[:1].upper() + wearer[1:] if at_start else wearer

    return _WEARER_RE.sub(sub, text)


# ----------------------------------------------------------------------------- templates


def make_instructions(text: str) -> list[Instruction]:
    """Question/answer pairs for one description (empty list if nothing reliable can be made)."""
    action = parse_description(text)
    if action is None:
        answer = first_person(text)
        if answer is None:
            return []
        m = _GENERIC_RE.match(" ".join(text.split()))
        verb = base_form(m["verb"]) if m else None
        return [Instruction(DOING_QUESTION, answer, verb, None, "generic")]
    if action.direction:
        d = action.direction
        return [
            Instruction(DOING_QUESTION, f"I am turning {d}.", "turn", None, "doing"),
            Instruction(TURN_QUESTION, f"{d.capitalize()}.", "turn", None, "turn"),
        ]
    obj, place = action.object_phrase, action.place_phrase
    doing = f"I am {action.verb_ing} {obj}" + (f" {place}" if place else "") + "."
    what = obj[0].upper() + obj[1:] + "."
    out = [
        Instruction(DOING_QUESTION, doing, action.verb, action.object, "doing"),
        Instruction(
            f"What did I just {action.verb}" + (f" {place}" if place else "") + "?",
            what,
            action.verb,
            action.object,
            "just",
        ),
    ]
    if action.verb in HOLDING_VERBS:
        out.append(
            Instruction("What object am I holding?", what, action.verb, action.object, "holding")
        )
    if place:
        out.append(
            Instruction(
                f"Where am I {action.verb_ing} {obj}?",
                place[0].upper() + place[1:] + ".",
                action.verb,
                action.object,
                "where",
            )
        )
    return out
