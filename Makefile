# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the contrib wheel (cv2.xphoto, the fsr inpainter) replaces the plain headless one that
	# earlier venvs hold: two wheels writing one cv2 package would break it
	$(BIN)/python -m pip uninstall --quiet --yes opencv-python-headless 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev,fonts,ray,onnx,timm,xrv]'
	# PP-OCRv4's DBNet ONNX file (Apache-2.0) ships in this wheel; only the file is used, and
	# --no-deps keeps its opencv-python requirement from clashing with opencv-python-headless
	$(BIN)/python -m pip install --quiet --no-deps rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/xraydebug demo --out demo-run

lint: $(STAMP)
	$(BIN)/ruff check xraydebug tests benchmarks
	$(BIN)/ruff format --check xraydebug tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format xraydebug tests benchmarks
	$(BIN)/ruff check --fix xraydebug tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-run .pytest_cache .ruff_cache
