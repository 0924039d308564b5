"""Seeds of kreg's stochastic layers (kreg/layers/_seeds.py): the bit layout,
the seed tensors and the PyTorch seed hash."""

import keras
import numpy as np
import pytest
from keras import ops

from kreg import _compat
from kreg.layers import _seeds


def test_encode_seed_closed_form_on_ints_and_tensors():
    # seed0 = user mod 2**24; seed1 = (user >> 24) * 2**20 + counter.
    for user, counter in [(0, 0), (5, 3), (2**24 + 7, 1), (2**32 - 1, 2**20 - 1)]:
        seed0, seed1 = _seeds.encode_seed(user, counter)
        assert (seed0, seed1) == (user % 2**24, (user >> 24) * 2**20 + counter)
        assert seed0 < 2**24 and seed1 < 2**28
        if keras.backend.backend() == "tensorflow":
            # The same numbers from an int64 tensor (kreg.export's in-graph seed).
            tensor = _seeds.encode_seed(ops.convert_to_tensor(np.int64(user)), counter)
            assert [int(ops.convert_to_numpy(w)) for w in tensor] == [seed0, seed1]


def test_seed_layout_gives_every_layer_and_salt_its_own_seed():
    pass_seed = ops.convert_to_tensor(np.array(_seeds.encode_seed(2**32 - 1, 2**20 - 1)),
                                      dtype=_seeds.seed_dtype())
    seeds = set()
    for index in range(_seeds.MAX_SAMPLING_LAYERS):
        for salt in range(_seeds.MAX_SALTS):
            s = ops.convert_to_numpy(_seeds.layer_seed(pass_seed, index, salt)._seed_tensor)
            assert int(s[0]) < 2**31 and int(s[1]) < 2**31  # fits every seed dtype
            seeds.add(tuple(int(w) for w in s))
    assert len(seeds) == _seeds.MAX_SAMPLING_LAYERS * _seeds.MAX_SALTS
    with pytest.raises(ValueError, match="at most 127 sampling layers"):
        _seeds.layer_seed(pass_seed, _seeds.MAX_SAMPLING_LAYERS)
    with pytest.raises(ValueError, match="8 draws per layer"):
        _seeds.layer_seed(pass_seed, 0, salt=8)


def test_tensor_seed_is_one_fixed_seed_and_counts_as_seeded():
    dtype = _seeds.seed_dtype()
    assert keras.backend.standardize_dtype(dtype) == \
        keras.backend.standardize_dtype(_compat.random_seed_dtype())
    seed = ops.convert_to_tensor(np.array([3, 4]), dtype=dtype)
    tensor_seed = _seeds.TensorSeed(seed)
    assert isinstance(tensor_seed, _compat.FixedSeed)
    assert isinstance(tensor_seed, keras.random.SeedGenerator)
    assert tensor_seed._initial_seed is not None  # Keras's torch fast path
    expected = _seeds.torch_mixed_seed(seed) if keras.backend.backend() == "torch" \
        else seed
    np.testing.assert_array_equal(ops.convert_to_numpy(tensor_seed.next()),
                                  ops.convert_to_numpy(expected))


def test_mix32_is_murmurhash3s_finalizer():
    # fmix32 reference values (MurmurHash3, Appleby): 0 -> 0, 1 -> 0x514E28B7.
    assert _seeds.mix32(0) == 0
    assert _seeds.mix32(1) == 0x514E28B7
    assert _seeds.mix32(2**32 + 1) == _seeds.mix32(1)  # 32-bit input
    values = {_seeds.mix32(x) for x in range(1000)}
    assert len(values) == 1000 and all(0 <= x < 2**32 for x in values)


def test_torch_mixed_seed_tells_apart_what_a_plain_sum_would_not():
    # Keras's torch backend seeds with seed[0] + seed[1]: (a, b + 1) and
    # (a + 1, b) would give one stream. The hash keeps them apart.
    dtype = "int32"  # PyTorch's seed dtype
    pairs = [(5, 8), (6, 7), (7, 6), (0, 13)]
    mixed = [ops.convert_to_numpy(_seeds.torch_mixed_seed(
        ops.convert_to_tensor(np.array(p), dtype=dtype))) for p in pairs]
    assert len({tuple(int(w) for w in m) for m in mixed}) == len(pairs)
    for m in mixed:
        assert int(m[1]) == 0 and -2**31 <= int(m[0]) < 2**31  # one int32 word
