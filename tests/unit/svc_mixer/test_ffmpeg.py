"""The FFmpeg argument list (ffmpeg-python), the key info file, stderr parsing and where the
stop's RTCP BYE goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from svc_mixer.ffmpeg import HlsParams, build_argv, keyinfo_text, parse_segment_number, rtcp_address


def _params(**kw: object) -> HlsParams:
    base: dict[str, object] = {
        "sdp_path": Path("/state/rooms/r1.sdp"),
        "keyinfo_path": Path("/state/keys/r1.keyinfo"),
        "out_dir": Path("/hls/r1"),
    }
    base.update(kw)
    return HlsParams(**base)  # type: ignore[arg-type]


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_argv_reads_sdp_and_writes_encrypted_hls() -> None:
    argv = build_argv(_params(start_number=42, hls_time_s=1.0, hls_list_size=4))
    assert argv[0] == "ffmpeg"
    # input options come before -i, and the SDP input needs file,udp,rtp
    i = argv.index("-i")
    assert argv[i + 1] == "/state/rooms/r1.sdp"
    assert _opt(argv, "-protocol_whitelist") == "file,udp,rtp"
    assert argv.index("-protocol_whitelist") < i
    assert argv.index("-analyzeduration") < i
    assert "-localaddr" not in argv  # no bind address given: FFmpeg's default
    assert (
        _opt(argv, "-ar") == "24000" and _opt(build_argv(_params(audio_sample_rate=48000)), "-ar") == "48000"
    )
    bound = build_argv(_params(bind_address="127.0.0.1"))
    assert _opt(bound, "-localaddr") == "127.0.0.1" and bound.index("-localaddr") < bound.index("-i")
    # libopus decodes the forwarded Opus (cheaper than the native decoder)
    assert argv[argv.index("-acodec") + 1] == "libopus" and argv.index("-acodec") < i
    assert _opt(argv, "-f") == "hls"
    assert argv[argv.index("-acodec", i) + 1] == "aac"
    assert _opt(argv, "-b:a") == "48k"
    assert _opt(argv, "-ac") == "1"
    assert _opt(argv, "-hls_time") == "1"
    assert _opt(argv, "-hls_list_size") == "4"
    assert _opt(argv, "-start_number") == "42"
    flags = _opt(argv, "-hls_flags").split("+")
    assert {"delete_segments", "append_list", "omit_endlist", "temp_file"} <= set(flags)
    assert _opt(argv, "-hls_key_info_file") == "/state/keys/r1.keyinfo"
    assert _opt(argv, "-hls_segment_filename") == "/hls/r1/segment_%d.ts"
    assert "/hls/r1/stream.m3u8" in argv[i + 2 :]
    assert "-nostdin" in argv


def test_argv_is_a_list_of_plain_arguments() -> None:
    argv = build_argv(_params(ffmpeg_bin="/usr/bin/ffmpeg", hls_time_s=2.5, audio_bitrate="32k"))
    assert argv[0] == "/usr/bin/ffmpeg"
    assert all(isinstance(a, str) for a in argv)
    assert _opt(argv, "-hls_time") == "2.5"
    assert _opt(argv, "-b:a") == "32k"


def test_keyinfo_has_uri_path_and_hex_iv() -> None:
    iv = bytes(range(16))
    text = keyinfo_text("http://h/hls/rooms/r1/enc.key", Path("/state/keys/r1.key"), iv)
    assert text == "http://h/hls/rooms/r1/enc.key\n/state/keys/r1.key\n000102030405060708090a0b0c0d0e0f\n"
    with pytest.raises(ValueError):
        keyinfo_text("u", Path("k"), b"short")


@pytest.mark.parametrize(
    ("line", "number"),
    [
        ("[hls @ 0x55] Opening 'crypto:/hls/r1/segment_7.ts.tmp' for writing", 7),
        ("[hls @ 0x55] Opening '/hls/r1/segment_12.ts' for writing", 12),
        ("[hls @ 0x55] Opening '/hls/r1/stream.m3u8.tmp' for writing", None),
        ("[hls @ 0x55] Opening '/state/keys/r1.key' for reading", None),
        ("size=N/A time=00:00:05.95 bitrate=N/A", None),
    ],
)
def test_segment_number_from_stderr(line: str, number: int | None) -> None:
    assert parse_segment_number(line) == number


def test_rtcp_bye_goes_to_the_bound_address_and_rtcp_port() -> None:
    params = _params(bind_address="10.0.0.5")
    assert "-localaddr" in build_argv(params) and rtcp_address(params, 10002) == ("10.0.0.5", 10003)
    # FFmpeg binds every address without -localaddr: loopback reaches it
    assert "-localaddr" not in build_argv(_params()) and rtcp_address(_params(), 10002) == (
        "127.0.0.1",
        10003,
    )
