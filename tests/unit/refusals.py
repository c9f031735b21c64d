"""What the unit tests check of a refused call: the contract's error code."""
import pytest

from common.errors import DomainError


def code(call, *args, **kwargs):
    """The code of the ``DomainError`` that ``call(*args, **kwargs)`` raises (it must raise one)."""
    with pytest.raises(DomainError) as raised:
        call(*args, **kwargs)
    return raised.value.code
