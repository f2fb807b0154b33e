"""Sans-io MQTT codec: 3.1.1 (protocol level 4) and 5.0 (level 5).

Bytes go in with :meth:`Reader.feed`, which returns the complete packets they finish.
Encoders return the bytes of one packet; :class:`PublishTemplate` pre-computes the
parts of a PUBLISH that repeat (fixed header, topic, properties) so that a publisher
adds only its packet id and payload per message. Nothing here touches a socket.

The package: ``codes`` (packet types, reason codes, property ids), ``packets`` (the
packet classes), ``fields`` and ``properties`` (fields and MQTT 5 properties, each a
table of value types both ways), ``reader`` (a table of packet types: flags and
decoder) and ``encode``.

The reader is strict, and a broken packet is a protocol error, never an exception out
of :meth:`Reader.feed`: the reader sets :attr:`Reader.error` (a :class:`ProtocolError`
with the MQTT 5 reason code a server would send in its DISCONNECT) and stops reading.
Refused: a variable-length integer longer than 4 bytes, a field that runs past the end
of its packet, a packet longer than the reader's cap, invalid UTF-8 (or U+0000) in a
string, a reserved flag set, a packet id of 0, a wildcard in a PUBLISH topic, an
unknown or misplaced property, and a CONNECT with a protocol name other than ``MQTT``.
A CONNECT with an unknown protocol level is reported with reason 0x84 (unsupported
protocol version), which a server answers with a CONNACK rather than a DISCONNECT.
"""

from __future__ import annotations

from tippingpoint.wire.mqtt.codes import *  # noqa: F403
from tippingpoint.wire.mqtt.encode import *  # noqa: F403
from tippingpoint.wire.mqtt.fields import encode_varint as encode_varint
from tippingpoint.wire.mqtt.packets import *  # noqa: F403
from tippingpoint.wire.mqtt.properties import encode_properties as encode_properties
from tippingpoint.wire.mqtt.reader import Reader as Reader
