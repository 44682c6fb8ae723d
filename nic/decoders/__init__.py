"""Caption decoders, all behind one step API that search code relies on (:mod:`nic.decoders.base`).

Built-in decoders, one module each, registered by name (``decoder.type``):

* ``nic``: :class:`ShowAndTellDecoder` (:mod:`nic.decoders.show_tell`);
* ``attention``: :class:`ShowAttendTellDecoder` (:mod:`nic.decoders.attention`), options in
  ``decoder.attention``.

A new decoder is one module with a ``@register_decoder("name")`` class (its options, if any,
in a nested ``Options`` dataclass), imported before the config is loaded; nothing else changes.
"""

from nic.decoders.attention import ATTENTION_QUERIES, ShowAttendTellDecoder, attention_regularizer  # "attention"
from nic.decoders.base import (
    DECODERS,
    CommonSettings,
    State,
    StepDecoderBase,
    build_decoder,
    decoder_class,
    decoder_options,
    register_decoder,
    sequence_nll,
)
from nic.decoders.show_tell import ShowAndTellDecoder  # registers "nic"

__all__ = [
    "ATTENTION_QUERIES",
    "DECODERS",
    "CommonSettings",
    "ShowAndTellDecoder",
    "ShowAttendTellDecoder",
    "State",
    "StepDecoderBase",
    "attention_regularizer",
    "build_decoder",
    "decoder_class",
    "decoder_options",
    "register_decoder",
    "sequence_nll",
]
