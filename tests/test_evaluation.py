"""Scoring "What am I doing?" answers: verb inflections, object nouns and phrases, chance levels."""

import pytest

from exo2ego_edge.train.evaluation import (
    answer_parts, balanced_accuracy, chance_levels, object_matches, object_phrase, verb_matches,
)


@pytest.mark.parametrize("answer", ["I am picking up the cup.", "She picks the cup up.", "I picked up a cup.",
                                    "pick up the cup"])
def test_verb_with_particle_in_any_inflection(answer):
    assert verb_matches(answer, "pick up")


def test_verb_needs_its_particle_after_it():
    assert not verb_matches("I am picking the cup.", "pick up")
    assert not verb_matches("Up, I am picking the cup.", "pick up")
    assert verb_matches("I am putting the cup in the box.", "put")
    assert not verb_matches("I am pushing the cup.", "put")


def test_object_noun_singular_or_plural_whole_word():
    assert object_matches("I am stacking the blocks.", "block")
    assert object_matches("I am opening the boxes.", "box")
    assert not object_matches("I am holding the blockade.", "block")


def test_object_phrase_is_the_noun_with_its_qualifier():
    assert object_phrase("I am putting the blue block on the purple block.", "block") == "blue block"
    assert object_phrase("I am cutting the knife.", "knife") == "knife"  # a determiner is no qualifier
    assert object_phrase("I am opening the green box.", "box") == "green box"
    assert object_matches("I am picking up the green boxes.", "green box")


def test_answer_parts_tell_a_wrong_colour_from_a_right_answer():
    row = {"verb": "push", "object": "bowl", "answer": "I am pushing the orange bowl."}
    assert answer_parts("I am pushing the blue bowl.", row) == {"verb": True, "object": True, "colour": False}
    assert answer_parts("I am pushing the orange bowl.", row) == {"verb": True, "object": True, "colour": True}
    assert answer_parts("I am opening the orange box.", row) == {"verb": False, "object": False, "colour": False}


def test_chance_levels_majority_and_guessing():
    top, guess = chance_levels(["a", "a", "a", "b"])
    assert top == pytest.approx(0.75)
    assert guess == pytest.approx(0.75**2 + 0.25**2)
    assert chance_levels([]) == (0.0, 0.0)


def test_balanced_accuracy_averages_per_label_and_a_constant_answer_scores_one_over_labels():
    labels = ["block"] * 6 + ["cup"] * 2 + ["ball"] * 2
    always_block = [label == "block" for label in labels]
    assert sum(always_block) / len(labels) == pytest.approx(0.6)
    assert balanced_accuracy(labels, always_block) == pytest.approx(1 / 3)
    assert balanced_accuracy(labels, [True] * 6 + [True, False] + [False, False]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert balanced_accuracy([], []) == 0.0
