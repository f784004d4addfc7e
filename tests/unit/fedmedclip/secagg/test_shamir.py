import itertools
import os

import pytest

from fedmedclip.secagg.shamir import combine_shares, split_secret


def test_any_threshold_shares_rebuild_the_secret_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, threshold=3, count=5)
    assert [i for i, _ in shares] == [1, 2, 3, 4, 5]
    for subset in itertools.combinations(shares, 3):
        assert combine_shares(list(subset)) == secret
    assert combine_shares(shares[:2]) != secret


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        split_secret(b"short", 2, 3)
    with pytest.raises(ValueError, match="threshold"):
        split_secret(os.urandom(32), 4, 3)
    shares = split_secret(os.urandom(32), 2, 3)
    with pytest.raises(ValueError, match="duplicate"):
        combine_shares([shares[0], shares[0]])
