"""Shared core of audio-rtc: config, logging, errors, records, etcd, bus, scheduler, reconcile."""
