# The two commands a new user types: `make reproduce` and `make test`.
# Each creates or updates the project-local virtual environment (.venv) from requirements.txt first.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
PROFILE  ?= default
DATA     ?=
FORCE    ?=
PARAMS   ?=
KERNEL   := sphereface

.PHONY: reproduce test venv clean-venv

$(STAMP): requirements.txt pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# MTCNN weights for data_prep (MIT, shipped in the wheel); its metadata pins torch<2.3 and
	@# torchvision, which we never import, so it is installed without its dependencies.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (sphereface)" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	@# FORCE=1 re-runs up-to-date notebooks; PARAMS="iterations=200 seeds=[0,1]" overrides parameters
	@# (results in reports/$(PROFILE)-custom/, see --help)
	$(PY) -m sphereface_lib.companion.reproduce --profile $(PROFILE) $(if $(DATA),--data $(DATA),) \
		$(if $(FORCE),--force,) $(if $(PARAMS),--param "$(PARAMS)",)

test: $(STAMP)
	$(PY) -m pytest tests

clean-venv:
	rm -rf $(VENV)
