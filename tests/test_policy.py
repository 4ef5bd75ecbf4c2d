"""The shared policy package: observation encoding, one distribution per action space,
masks, and the JSON form of every supported space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from turnwise.policy import build_policy, encode, flat_size, make_head, mask_from
from turnwise.policy.observations import stack
from turnwise.spaces import space_from_json, space_to_json

OBSERVATION_SPACES = {
    "box": spaces.Box(-1.0, 1.0, (3,)),
    "box-2d": spaces.Box(0.0, 5.0, (2, 3)),
    "discrete": spaces.Discrete(4, start=2),
    "multidiscrete": spaces.MultiDiscrete([3, 2]),
    "multibinary": spaces.MultiBinary(3),
    "dict": spaces.Dict(
        {
            "grid": spaces.Box(0.0, 1.0, (2, 2)),
            "item": spaces.Discrete(3),
            "stock": spaces.Box(0.0, 9.0, (2,)),
        }
    ),
    "tuple": spaces.Tuple([spaces.Discrete(2), spaces.Box(-1.0, 1.0, (2,))]),
}
ACTION_SPACES = {
    "discrete": spaces.Discrete(5, start=1),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "multibinary": spaces.MultiBinary(3),
    "box": spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32)),
}


@pytest.mark.parametrize("name", OBSERVATION_SPACES)
def test_a_batch_encodes_as_gymnasium_flattens_each_row(name):
    space = OBSERVATION_SPACES[name]
    space.seed(0)
    samples = [space.sample() for _ in range(5)]
    expected = np.stack([spaces.flatten(space, s) for s in samples]).astype(np.float32)
    encoded = encode(space, stack(space, samples))
    assert encoded.shape == (5, flat_size(space))
    np.testing.assert_array_equal(encoded, expected)


def test_a_dict_mask_part_is_the_mask_not_an_input():
    space = spaces.Dict({"pos": spaces.Box(0, 1, (2,)), "action_mask": spaces.MultiBinary(3)})
    batch = {"pos": np.zeros((2, 2)), "action_mask": np.array([[1, 0, 1], [0, 1, 1]])}
    assert flat_size(space) == 2 and encode(space, batch).shape == (2, 2)
    assert mask_from(space, batch, {}).tolist() == [[True, False, True], [False, True, True]]
    assert mask_from(spaces.Box(0, 1, (2,)), None, {"action_mask": [[1, 1]]}).dtype == bool


@pytest.mark.parametrize("name", ACTION_SPACES)
def test_every_action_space_samples_valid_actions_with_consistent_log_probs(name):
    space = ACTION_SPACES[name]
    torch.manual_seed(0)
    model = build_policy(spaces.Box(-1.0, 1.0, (3,)), space, [8])
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
    actions, logp, values = model.act(obs)
    assert values.shape == (64,) and logp.shape == (64,)
    env_actions = model.head.to_env(actions)
    assert all(space.contains(a) for a in env_actions)
    dist, _ = model.distribution(torch.as_tensor(obs))
    logged = dist.log_prob(torch.as_tensor(actions)).detach().numpy()
    np.testing.assert_allclose(logged, logp, rtol=1e-5)
    greedy, _, _ = model.act(obs, greedy=True)
    assert all(space.contains(a) for a in model.head.to_env(greedy))


def test_box_actions_are_logged_unclipped_and_sent_clipped():
    space = ACTION_SPACES["box"]
    head = make_head(space)
    logged = np.array([[-3.0, 5.0], [0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(head.to_env(logged), [[-1.0, 2.0], [0.5, 1.0]])
    with pytest.raises(ValueError, match="bounded"):
        make_head(spaces.Box(-np.inf, np.inf, (2,)))


@pytest.mark.parametrize("name", ["discrete", "multidiscrete"])
def test_a_masked_action_is_never_sampled_nor_chosen_greedily(name):
    space = ACTION_SPACES[name]
    torch.manual_seed(0)
    model = build_policy(spaces.Box(-1.0, 1.0, (3,)), space, [8])
    head = model.head
    rng = np.random.default_rng(1)
    mask = rng.random((256, head.size)) < 0.5
    for group in np.split(np.arange(head.size), np.cumsum(head.sizes)[:-1]):
        mask[np.arange(256), group[rng.integers(0, len(group), 256)]] = True  # one legal each
    obs = rng.uniform(-1, 1, (256, 3)).astype(np.float32)
    offsets = np.cumsum([0, *head.sizes[:-1]])
    for greedy in (False, True):
        actions, logp, _ = model.act(obs, mask, greedy=greedy)
        chosen = (actions.reshape(256, -1) + offsets).T
        assert all(mask[np.arange(256), column].all() for column in chosen)
        assert np.isfinite(logp).all()
    dist, _ = model.distribution(torch.as_tensor(obs), torch.as_tensor(mask))
    assert torch.isfinite(dist.entropy()).all()


@pytest.mark.parametrize(
    "space", [*OBSERVATION_SPACES.values(), *ACTION_SPACES.values(), spaces.Box(-np.inf, 0, (2,))]
)
def test_every_supported_space_round_trips_through_json(space):
    assert space_from_json(json.loads(json.dumps(space_to_json(space)))) == space


def test_a_dict_keeps_its_key_order_through_json():
    space = spaces.Dict([("z", spaces.Discrete(2)), ("a", spaces.Box(0, 1, (1,)))])
    restored = space_from_json(space_to_json(space))
    assert list(restored.spaces) == list(space.spaces)


def test_the_mlps_tanh_equals_torch_tanh_and_its_gradient():
    """``turnwise.policy.network.Tanh`` (2 sigmoid(2x) - 1, faster on CPU) against
    ``torch.tanh``: values and gradients within float rounding, with and without grad."""
    from turnwise.policy.network import Tanh

    x = torch.linspace(-20.0, 20.0, 200_001, requires_grad=True)
    fast = Tanh()(x)
    reference = torch.tanh(x.detach().clone().requires_grad_())
    assert float((fast - reference).detach().abs().max()) < 3e-7
    (grad,) = torch.autograd.grad(fast.sum(), x)
    expected = 1 - torch.tanh(x.detach()) ** 2
    assert float((grad - expected).abs().max()) < 1e-6
    with torch.no_grad():
        assert torch.allclose(Tanh()(x), fast.detach(), atol=0, rtol=0)
