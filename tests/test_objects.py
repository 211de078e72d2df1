"""The object measure on hand-made frames whose answer is known: drawn, moved, missing, a faint
blur, a smear, sizes, single pixels, and the summary of unpaired frames."""

import numpy as np
import pytest

from jaxprobe.collection import objects

BG = np.array([144, 72, 17], np.uint8)  # Pong's brown
WHITE = np.array([236, 236, 236], np.uint8)
GREEN = np.array([92, 186, 92], np.uint8)


def stack(ball=(40, 40), paddle=(10, 70), frames=(3,)):
  """One colour stack (84, 84, 12): background, a 2x2 ball and a 8x2 paddle in the given frames."""
  s = np.tile(BG, (84, 84, 4)).reshape(84, 84, 12).copy()
  for f in frames:
    if ball is not None:
      s[ball[0] : ball[0] + 2, ball[1] : ball[1] + 2, 3 * f : 3 * f + 3] = WHITE
    if paddle is not None:
      s[paddle[0] : paddle[0] + 8, paddle[1] : paddle[1] + 2, 3 * f : 3 * f + 3] = GREEN
  return s[None]


def measure(real, recon):
  return objects.summarise(objects.compare(real, recon, BG))


def test_background_is_the_per_pixel_median():
  states = np.concatenate([stack(ball=(40, 10 * i)) for i in range(1, 6)])
  np.testing.assert_array_equal(objects.background(states), np.broadcast_to(BG, (84, 84, 3)))


def test_identical_reconstruction_draws_everything():
  real = stack()
  got = measure(real, real)
  assert got["object_recall"] == 1.0 and got["states_all_drawn"] == 1.0 and got["object_precision"] == 1.0
  assert got["objects_by_size"] == {"2-6": 1, "7-30": 1, ">30": 0}


def test_moved_ball_is_not_drawn_and_costs_precision():
  got = measure(stack(ball=(40, 40)), stack(ball=(40, 46)))
  assert got["recall_by_size"]["2-6"] == 0.0 and got["recall_by_size"]["7-30"] == 1.0
  assert got["states_all_drawn"] == 0.0
  assert got["object_precision"] == pytest.approx(16 / 20)  # the paddle's 16 pixels of 20


def test_missing_ball_and_faint_blur():
  real = stack()
  missing = stack(ball=None)
  assert measure(real, missing)["recall_by_size"]["2-6"] == 0.0
  bg = np.tile(BG, 4).astype(np.float32)  # the background of all four frames, (12,)
  faint = np.round(bg + 0.2 * (real - bg)).astype(np.uint8)  # a fifth of the way from background to the objects
  got = measure(real, faint)
  assert got["object_recall"] == 0.0 and got["object_precision"] is None  # nothing stands out from the background


def test_a_smear_draws_the_ball_but_lowers_precision():
  real = stack(paddle=None)
  smear = real.copy()
  smear[0, 40:42, 30:50, 9:12] = WHITE  # a streak through the ball, 20 pixels long
  got = measure(real, smear)
  assert got["object_recall"] == 1.0
  # Pixels within 2 of the ball (columns 38-43) count; the other 28 of 40 streak pixels do not.
  assert got["object_precision"] == pytest.approx(12 / 40)


def test_single_pixels_are_not_objects_and_counts_add_up():
  real = stack()
  real[0, 70, 70, 9:12] = WHITE
  total = objects.add(objects.compare(real, real, BG), objects.compare(stack(ball=None), stack(ball=None), BG))
  assert list(total["objects"]) == [1, 2, 0] and total["states"] == 2


def test_describe_unpaired_frames():
  states = np.concatenate([stack(), stack(ball=None)])
  got = objects.describe(states, BG)
  assert got["frames"] == 8
  assert got["objects_per_frame"] == pytest.approx(3 / 8)
  assert got["share_with_object_of_size"] == {"2-6": 1 / 8, "7-30": 2 / 8, ">30": 0.0}


def pong_ram(ball_rc, paddle_row=None):
  """RAM (1, 128) that puts Pong's ball centre at `ball_rc` (84 x 84 row, col) by NAMED_OBJECTS' mapping."""
  ram = np.zeros((1, 128), np.uint8)
  ball, agent_paddle = objects.NAMED_OBJECTS["Pong-v5"][:2]
  ram[0, ball.row_address] = round(ball_rc[0] * 210 / 84 - ball.row_offset)
  ram[0, ball.col_address] = round(ball_rc[1] * 160 / 84 - ball.col_offset)
  if paddle_row is not None:
    ram[0, agent_paddle.row_address] = round(paddle_row * 210 / 84 - agent_paddle.row_offset)
  return ram


def named(real, recon, ram):
  counts = objects.compare(real, recon, BG, ram=ram, named=objects.NAMED_OBJECTS["Pong-v5"])
  return objects.summarise(counts)


def test_ram_places_the_named_objects():
  ball, agent_paddle, _ = objects.NAMED_OBJECTS["Pong-v5"]
  rows, cols = ball.centre(pong_ram((40, 41)))
  assert (rows[0], cols[0]) == (40, 41)
  rows, cols = agent_paddle.centre(pong_ram((40, 41), paddle_row=50))
  assert (rows[0], cols[0]) == (50, 74)  # the agent's paddle sits in columns 74-75


def test_named_ball_drawn_missing_and_absent():
  real = stack(ball=(40, 40), paddle=(46, 74))  # paddle rows 46-53, centre 50
  ram = pong_ram((40, 40), paddle_row=50)
  got = named(real, real, ram)
  assert got["named_drawn"] == {"ball": 1.0, "agent's paddle": 1.0, "opponent's paddle": None}
  assert got["named_present"] == {"ball": 1, "agent's paddle": 1, "opponent's paddle": 0}
  got = named(real, stack(ball=None, paddle=(46, 74)), ram)
  assert got["named_drawn"] == {"ball": 0.0, "agent's paddle": 1.0, "opponent's paddle": None}
  # Where RAM puts the ball, no object: the state has no ball (served or out of play).
  got = named(real, real, pong_ram((60, 20), paddle_row=50))
  assert got["named_present"]["ball"] == 0 and got["named_drawn"]["ball"] is None
  # Only the newest frame counts: a ball in an older frame only is not the state's ball.
  got = named(stack(ball=(40, 40), paddle=None, frames=(0,)), stack(ball=None, paddle=None), ram)
  assert got["named_present"]["ball"] == 0


def test_named_counts_add_up_and_need_ram():
  real, ram = stack(paddle=None), pong_ram((40, 40))
  part = lambda recon: objects.compare(real, recon, BG, ram=ram, named=objects.NAMED_OBJECTS["Pong-v5"])
  total = objects.add(part(real), part(stack(ball=None, paddle=None)))
  assert objects.summarise(total)["named_drawn"]["ball"] == 0.5
  assert objects.summarise(objects.compare(real, real, BG))["named_drawn"] == {}


def test_a_flat_grey_image_does_not_draw_the_named_ball_through_its_blended_edge():
  real = stack(ball=(40, 40), paddle=None)
  blend = np.array([190, 154, 126], np.uint8)  # white and Pong's brown, mixed by the resize
  ring = np.zeros((84, 84), bool)
  ring[39:43, 39:43] = True
  ring[40:42, 40:42] = False
  real[0, ring, 9:12] = blend  # the 2x2 ball's 12 edge pixels, in the newest frame
  grey = np.full_like(real, 128)
  # The measure's rule (half of the pixels within 25%) is met by the edge alone; precision tells.
  plain = measure(real, grey)
  assert plain["object_recall"] == 1.0 and plain["object_precision"] < 0.01
  # A named object is judged on its core, the pixels far from the background: not drawn.
  assert named(real, grey, pong_ram((40.5, 40.5)))["named_drawn"]["ball"] == 0.0
  assert named(real, real, pong_ram((40.5, 40.5)))["named_drawn"]["ball"] == 1.0
