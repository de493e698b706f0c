"""The run-time type checker that tests/conftest.py installs on every neurorit_lens module.

beartype with PEP 484's numeric tower, so an ``int`` passes where ``float`` is annotated
(as the typing PEPs say it should); jaxtyping checks shapes and dtypes on top.
"""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
