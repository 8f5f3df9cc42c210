# Two commands do all set-up on a fresh machine (Python 3.10+ with venv):
#   make demo   create .venv, install everything, run the whole pipeline on the built-in demo data
#   make test   create .venv, install everything, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch trio is pinned and installed first, so pip never picks torch on its own.
TORCH  := torch==2.11.0 torchaudio==2.11.0 torchvision==0.26.0
FOLDS  ?= 0
# Test files run on 2 workers (pytest-xdist; a file's tests stay together on one, in order).
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test bench clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23.1"
	$(BIN)/pip install $(TORCH)
	# tinysoundfont's wheel declares pyaudio, needed only for playback (and unbuildable without
	# system headers): install it without dependencies.
	$(BIN)/pip install --no-deps "tinysoundfont==0.3.7"
	$(BIN)/pip install -e ".[test]" $(TORCH)
	# hydra-optuna-sweeper (hparams_search=...) declares optuna<3, which predates SQLAlchemy 2 and
	# Python 3.11 wheels; it runs on the optuna>=3.6 that setup.cfg installs: without its dependencies.
	$(BIN)/pip install --no-deps "hydra-optuna-sweeper>=1.2,<1.4"
	touch $@

# The main job: demo data -> features -> a 2-fold sweep -> retrain_val -> predictions -> blend.
demo: setup
	$(BIN)/python -m fstag.demo_job --folds $(FOLDS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/train_throughput.py

clean-demo:
	rm -rf data/demo multirun/demo submissions/demo.csv
