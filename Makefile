# tokenissue — two commands do all the set-up on a fresh Debian/Ubuntu machine:
#   make demo   installs what is missing, creates SoftHSM tokens, runs the main job
#   make test   the same set-up, then the whole suite and the static checks
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE ?= $(CURDIR)/.state
DEBS := softhsm2 opensc gnutls-bin libengine-pkcs11-openssl pebble postgresql \
        swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtpm2-pkcs11-1 libtpm2-pkcs11-tools dbus \
        libnss3-tools curl certmonger scep
# Binaries (or files) that tell whether each package is present (the software TPM's: swtpm,
# swtpm_ioctl, tpm2_getcap, tpm2-abrmd, the tabrmd TCTI, tpm2-pkcs11, tpm2_ptool, dbus-daemon;
# NSS's certutil, vfychain and tstclnt for the interop tests; curl for EST; certmonger; scepclient).
PROBES := /usr/bin/softhsm2-util /usr/bin/pkcs11-tool /usr/bin/p11tool \
          /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so /usr/bin/pebble /usr/lib/postgresql \
          /usr/bin/swtpm /usr/bin/swtpm_ioctl /usr/bin/tpm2_getcap /usr/sbin/tpm2-abrmd \
          /usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0 /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so \
          /usr/bin/tpm2_ptool /usr/bin/dbus-daemon /usr/bin/certutil /usr/bin/curl /usr/sbin/certmonger /usr/bin/scepclient

.PHONY: demo test test-fast deps venv lint clean bench

deps:
	@missing=0; for p in $(PROBES); do \
	  case $$p in */engines-3/*) [ -e $$p ] || [ -e /usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so ] || missing=1;; \
	  */libtss2-tcti-tabrmd.so.0) [ -e $$p ] || [ -e /usr/lib/aarch64-linux-gnu/libtss2-tcti-tabrmd.so.0 ] || missing=1;; \
	  */pkcs11/libtpm2_pkcs11.so) [ -e $$p ] || [ -e /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so ] || missing=1;; \
	  *) [ -e $$p ] || missing=1;; esac; done; \
	if [ $$missing = 1 ]; then \
	  echo "Installing Debian packages: $(DEBS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBS) >/dev/null; \
	fi

$(BIN)/tokenissue: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/tokenissue

demo: deps venv
	@STATE=$(STATE) TOKENISSUE_BIN=$(CURDIR)/$(BIN)/tokenissue bash softhsm-config/demo.sh

test: deps venv
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory lint

# The fast tier while working: the pure tests (no token, no server, about a minute) and the
# static checks. CI runs the whole suite with 'make test'.
test-fast: venv
	$(BIN)/pytest -q tests/unit
	$(MAKE) --no-print-directory lint

lint: venv
	$(BIN)/ruff check tokenissue tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: deps venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
