"""Drawing boxes and labels on frames (`pipeline.video.output.draw_labels`, what annotated video and photos use):
on a copy, in the colour of what is known about the face, labels kept inside the frame."""

import numpy as np
import pytest

from pipeline.video.output import KNOWN_COLOUR, UNKNOWN_COLOUR, BoxLabel, draw_labels

BOX = (10.0, 30.0, 50.0, 80.0)


def test_labels_are_drawn_on_a_copy():
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = draw_labels(image, [BoxLabel((10, 10, 40, 50), "alice", known=True)], header="cam0 #1")
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert drawn.any() and not image.any(), "the frame given stays untouched (other stages still read it)"


@pytest.mark.parametrize(("known", "colour"), [(True, KNOWN_COLOUR), (False, UNKNOWN_COLOUR)])
def test_a_box_has_the_colour_of_what_is_known(known, colour):
    drawn = draw_labels(np.zeros((100, 100, 3), np.uint8), [BoxLabel(BOX, "", known=known)])
    assert tuple(drawn[55, 10]) == colour  # on the box's left edge
    assert not drawn[55, 30].any(), "the box is an outline"


def test_a_predicted_box_is_greyed():
    drawn = draw_labels(np.zeros((100, 100, 3), np.uint8), [BoxLabel(BOX, "", known=True, predicted=True)])
    assert tuple(drawn[55, 10]) not in (KNOWN_COLOUR, UNKNOWN_COLOUR) and drawn[55, 10].any()


def test_a_label_at_the_top_edge_stays_inside_the_frame():
    image = np.zeros((100, 200, 3), np.uint8)
    box = (10.0, 0.0, 60.0, 50.0)
    labelled = draw_labels(image, [BoxLabel(box, "alice", known=True)])
    bare = draw_labels(image, [BoxLabel(box, "", known=True)])
    assert (labelled != bare).any(), "the label was drawn above the frame, where nobody sees it"
