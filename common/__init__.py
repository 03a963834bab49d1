"""Shared core of audio-rtc: config, logging, errors, records, etcd, bus, scheduler, reconcile."""

__all__: list[str] = []  # the modules are the API: import them, not this package
