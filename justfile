# audio-rtc: the commands people type. `just` alone lists them.
# Works when just was bootstrapped into .venv and .venv/bin is not on PATH: every tool is called
# by its .venv path. The stack itself is infra/stack.py (its --help says more).

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# the virtualenv's python once it exists; before that the system python3 (install creates .venv)
py := if path_exists(justfile_directory() / ".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# list the recipes
default:
    @{{ just_executable() }} --list --unsorted

# install what is missing: apt packages (sudo when not root) and .venv with the project
install:
    @echo "==> just install: apt packages and the project virtualenv (.venv), only what is missing"
    {{ py }} infra/stack.py install

# start NATS (JetStream), etcd and Redis on 127.0.0.1 under supervisord; prints the table
up:
    @echo "==> just up: install what is missing, render configs into the run dir, start everything, wait until healthy"
    {{ py }} infra/stack.py up

# stop everything the stack started (by pid, through supervisord); --purge also removes the run dir
down *ARGS:
    @echo "==> just down: stop every program through supervisord, then supervisord; data is kept unless --purge"
    {{ py }} infra/stack.py down "$@"

# stop everything and remove the run dir (all data)
purge:
    @echo "==> just purge: just down, then remove the run dir"
    {{ py }} infra/stack.py purge

# table of components, pids, ports, health and URLs
status:
    @echo "==> just status: the stack's components"
    {{ py }} infra/stack.py status

# tail the logs under the run dir: just logs [COMPONENT...] [-f]
logs *ARGS:
    @echo "==> just logs: tail the stack's log files"
    {{ py }} infra/stack.py logs "$@"

# the whole suite (its own throwaway servers on free ports; never touches a running `just up`)
test *ARGS: install
    @echo "==> just test: pytest, whole suite; the session starts its own servers on free ports in a temp dir"
    @# pytest exits 5 when it collected nothing: just fails on any non-zero status, so that fails too
    .venv/bin/python -m pytest "$@"

# unit tests only (no servers, no slow tests)
test-fast *ARGS:
    @echo "==> just test-fast: tests/unit without slow tests, no servers"
    {{ py }} infra/stack.py install --venv-only
    .venv/bin/python -m pytest tests/unit -m "not slow" "$@"

# ruff check, ruff format --check, mypy (strict)
lint:
    @echo "==> just lint: ruff check, ruff format --check, mypy"
    {{ py }} infra/stack.py install --venv-only
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy
    .venv/bin/mypy infra/stack.py infra/settings_doc.py tests/bench/runner.py tests/bench/__main__.py just

# write the AsyncAPI document of every subject to docs/asyncapi.yaml
asyncapi:
    @echo "==> just asyncapi: generate docs/asyncapi.yaml from common/contracts"
    .venv/bin/python -m common.contracts.asyncapi --out docs/asyncapi.yaml

# regenerate the generated docs: docs/asyncapi.yaml and README.md's service settings tables
docs:
    @echo "==> just docs: docs/asyncapi.yaml from common/contracts, README settings from each Config"
    .venv/bin/python -m common.contracts.asyncapi --out docs/asyncapi.yaml
    .venv/bin/python infra/settings_doc.py

# benchmarks: just bench [GROUP...] (core rooms mixer janus gateway faults e2e; none = all available)
bench *GROUPS:
    @echo "==> just bench: run benchmark groups, merge figures into bench/results/latest.json"
    {{ py }} infra/stack.py install --venv-only
    .venv/bin/python -m tests.bench "$@"

# save the latest figures as the baseline: just bench-save
bench-save:
    @echo "==> just bench-save: copy bench/results/latest.json to bench/results/baseline.json"
    .venv/bin/python -m tests.bench --save-baseline

# compare the latest figures with the saved baseline
bench-cmp:
    @echo "==> just bench-cmp: bench/results/latest.json against bench/results/baseline.json"
    .venv/bin/python -m tests.bench --compare
