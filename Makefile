# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test fuzz test-avx2 test-browser lint format demo bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(INSTALLED)

# The layering contracts (pyproject.toml [tool.importlinter]) are checked before the tests.
test: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

# The image loader on thousands of damaged files, new ones each run: about two minutes on two
# cores. FUZZ_EXAMPLES sets how many files of each format; a failure prints what reproduces it.
FUZZ_EXAMPLES ?= 2000
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz --hypothesis-show-statistics

# The backend tests again on an emulated CPU with AVX2 and no AVX-512 or VNNI, whose int8
# kernels most laptops run: numpy and ONNX Runtime read the CPU's features through CPUID, which
# qemu-user emulates. Emulation is far too slow to time anything; agreement is what it checks.
QEMU_CPU := Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid
test-avx2: install
	@if [ "$$(uname -m)" != x86_64 ]; then echo "test-avx2: an x86-64 machine is needed"; exit 0; fi; \
	command -v qemu-x86_64 >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq qemu-user >/dev/null || \
		{ $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq qemu-user >/dev/null; }; }; \
	qemu-x86_64 -cpu $(QEMU_CPU) $(PY) -c "from clipcli.models import cpu; print('emulated cpu:', cpu.signature())"; \
	qemu-x86_64 -cpu $(QEMU_CPU) $(PY) -m pytest -q -p no:cacheprovider -m backends

# The HTML pages as a browser draws them: headless Chromium screenshots a page of photos and the
# test finds every thumbnail on it; and the page of `clipcli serve`, driven through the DevTools
# protocol against a real server (make test runs both too, where a Chromium is installed).
# Debian's chromium is installed when missing.
test-browser: install
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq chromium >/dev/null || \
		{ $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }; }
	$(PY) -m pytest -q -m browser tests/views tests/web

lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check clipcli tests scripts
	$(VENV)/bin/ruff format --check clipcli tests scripts

format: install
	$(VENV)/bin/ruff check --fix clipcli tests scripts
	$(VENV)/bin/ruff format clipcli tests scripts

# The main job, offline: draw a folder of shapes (and a few resized copies), index it with the
# bundled model, search, classify; score the model on a labelled folder of shapes, calibrating a
# threshold per shape; sort the folder by them; find the copies.
DEMO := demo
CLIPCLI := $(VENV)/bin/clipcli
SHAPE_LABELS := circle,square,triangle,star,cross,ring

demo: install
	rm -rf $(DEMO)
	$(PY) -c "from pathlib import Path; from clipcli.shapes import write_sample_folder; \
	write_sample_folder(Path('$(DEMO)/photos'), 96, seed=7)"
	$(PY) -c "from pathlib import Path; from PIL import Image; \
	out = Path('$(DEMO)/photos/copies'); out.mkdir(); \
	[Image.open(p).convert('RGB').resize((Image.open(p).width // 2, Image.open(p).height // 2)) \
	.save(out / (p.stem + '-small.jpg'), quality=80) for p in sorted(Path('$(DEMO)/photos').glob('000[0-2]-*'))]"
	@printf '\n== clipcli index $(DEMO)/photos --model clipcli-shapes\n'
	$(CLIPCLI) index $(DEMO)/photos --index $(DEMO)/index --model clipcli-shapes
	@printf '\n== clipcli search "a red star"\n'
	$(CLIPCLI) search "a red star" --index $(DEMO)/index --top-k 5
	@printf '\n== clipcli search "a blue ring"\n'
	$(CLIPCLI) search "a blue ring" --index $(DEMO)/index --top-k 5
	@printf '\n== clipcli search --image (a green cross)\n'
	$(CLIPCLI) search --image $$(ls $(DEMO)/photos/*-green-cross.* | head -1) \
		--index $(DEMO)/index --top-k 3
	@printf '\n== clipcli classify --labels "$(SHAPE_LABELS)"\n'
	$(CLIPCLI) classify $$(ls $(DEMO)/photos/* | head -3) --model clipcli-shapes \
		--labels "$(SHAPE_LABELS)" --top-k 3
	$(PY) -c "from pathlib import Path; from clipcli.shapes import write_labelled_folder; \
	write_labelled_folder(Path('$(DEMO)/shapes'), 12, seed=8)"
	@printf '\n== clipcli eval $(DEMO)/shapes (one folder per shape), two template sets\n'
	$(CLIPCLI) eval $(DEMO)/shapes --model clipcli-shapes --templates default \
		--templates imagenet --html $(DEMO)/eval.html --thresholds $(DEMO)/thresholds.json
	@printf '\nThe report with its pictures: $(DEMO)/eval.html\n'
	@printf '\n== clipcli sort $(DEMO)/photos --thresholds (one folder per shape, or _unsorted)\n'
	$(CLIPCLI) sort $(DEMO)/photos --thresholds $(DEMO)/thresholds.json --into $(DEMO)/sorted
	@printf '\n== clipcli dupes (the resized copies in $(DEMO)/photos/copies)\n'
	$(CLIPCLI) dupes --index $(DEMO)/index --html $(DEMO)/dupes.html
	@printf '\nSearch it in a browser: $(CLIPCLI) serve --index $(DEMO)/index --open\n'

# Start-up is measured as users get it: pip compiles an installed package's bytecode, and an
# editable checkout run with PYTHONDONTWRITEBYTECODE would otherwise recompile it every time.
bench: install
	$(PY) -m compileall -q clipcli
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
