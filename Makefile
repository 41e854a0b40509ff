# wvo-batch: `make run` sets up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AGENTS ?= 4
ROADMAP ?= configs/roadmap.yaml
PYTEST_ARGS ?=
# An editable install as a plain path in a .pth file: setuptools' default editable finder costs
# ~11 ms of every start-up. Its 'compat' mode is marked transitional, so when a future setuptools
# refuses it, the default editable install is made instead.
PIP_E = $(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e $(1) 2>/dev/null \
	|| $(BIN)/python -m pip install --quiet -e $(1)

.PHONY: install install-dev install-ray run demo demo-fleet test bench autopilot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call PIP_E,.)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(call PIP_E,'.[dev]')
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-ray: pyproject.toml | $(BIN)/python
	$(call PIP_E,'.[ray]')
	@touch $@

install-ray: $(VENV)/.installed-ray

run: install
	$(BIN)/wvo-batch $(ROADMAP) --agents $(AGENTS)

demo: run

# The coding layer without credentials: a scratch repository, 8 tasks on 4 agents through a stand-in
# agent CLI (scripts/fake-coder): worktrees, a failing check, a critic's rejection, a conflict, landing.
demo-fleet: install
	PATH="$(abspath $(BIN)):$$PATH" sh scripts/demo-fleet

# make turns any failing recipe into its own exit 2, so pytest's own code is left in .pytest-exit
# (read by .ci/run, which tells exit 5, no test collected, from a failure).
test: install-dev install-ray
	@bash scripts/install-browser.sh
	@bash scripts/install-agent-clis.sh
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; echo $$rc > .pytest-exit; exit $$rc

bench: install-dev
	$(BIN)/python scripts/bench $(BENCH_ARGS)

# The original autopilot's knobs: AGENTS, ROADMAP, MAX_ITERATIONS, WVO_AUTOPILOT_ONCE=1.
# MAX_ITERATIONS (0: until nothing is runnable) maps to --iterations; WVO_AUTOPILOT_ONCE=1 in the
# environment means --once (read by wvo-batch itself, like every WVO_* variable).
autopilot: install
	$(BIN)/wvo-batch $(ROADMAP) $(if $(findstring -agents,$(AUTOPILOT_ARGS))$(findstring --roles,$(AUTOPILOT_ARGS)),,--agents $(AGENTS)) $(if $(MAX_ITERATIONS),--iterations $(MAX_ITERATIONS)) $(AUTOPILOT_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis bench-out .pytest-exit
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
