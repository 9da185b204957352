# The few commands everyone runs. Run as root on Debian 12 (apt and podman need it).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
EXAMPLE_VAULT := ANSIBLE_VAULT_PASSWORD_FILE=$(CURDIR)/inventory/example/.vault-pass.example

# Debian packages: dcmtk (real DICOM peers for tests), orthanc (the reference the IDs and
# benchmarks compare with), podman and debootstrap (simulated Pis), busybox/dnsmasq/hostapd
# (hotspot checks), sqlite3 (inspecting an index by hand), rsync (backup.yml pulls with it),
# libfuse3-dev pkg-config gcc python3-dev (pip builds pyfuse3, for bench/powerfs.py, from source),
# mtools/fdisk/dosfstools/xz-utils (SD card images: FAT without mounting, sfdisk, .img.xz).
APT_PACKAGES := python3-venv dcmtk orthanc orthanc-dicomweb podman crun netavark aardvark-dns \
	iptables debootstrap uidmap sqlite3 curl dnsmasq-base hostapd busybox dnsutils iproute2 nftables rsync \
	libfuse3-dev pkg-config gcc python3-dev mtools fdisk dosfstools xz-utils e2fsprogs
# Headless Chromium for the viewer's browser tests (its recommends would add ~130 packages).
APT_LEAN := chromium fonts-liberation

# The OHIF Viewer build the server's OHIF plugin is tested with (npm @ohif/app, fetched once,
# checked against the registry's sha512; the plugins role fetches it the same way).
OHIF_VERSION := 3.13.2
OHIF_BUILD := $(CURDIR)/.cache/ohif/$(OHIF_VERSION)/.complete

.PHONY: setup demo demo-destroy test test-server test-newest test-repo lint lint-python \
	lint-ansible molecule molecule-% bench bench-fleet fleet-smoke clean lock collection image \
	image-boot

setup: $(BIN)/pipacs $(OHIF_BUILD) ## install Debian packages and the Python venv (idempotent)

$(OHIF_BUILD): | $(BIN)/pipacs
	$(BIN)/python roles/plugins/files/ohif_fetch.py $(CURDIR)/.cache/ohif --version $(OHIF_VERSION)

$(BIN)/pipacs: requirements.txt server/pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	lean=$$(for p in $(APT_LEAN); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing$$lean" ]; then \
		echo "apt-get install $$missing $$lean"; \
		apt-get update -qq; \
	fi; \
	if [ -n "$$missing" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi; \
	if [ -n "$$lean" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$lean; \
	fi
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -e server
	touch $@

demo: setup ## provision a simulated classroom Pi end to end and print its URLs
	molecule/resources/demo.sh  # HTTP on 127.0.0.1:18042, DICOM on 127.0.0.1:14242

demo-destroy:
	molecule/resources/demo.sh --destroy

test: setup lint-python test-server test-newest test-repo molecule fleet-smoke ## everything CI runs (test-repo lints the Ansible side)

test-server: setup ## the server's tests against real dcmtk peers and Orthanc
	cd server && $(BIN)/pytest -q

# The server's fast paths patch pynetdicom and waitress internals (server/src/pipacs/
# fastpaths.py). This runs their tests and a DICOM/HTTP smoke set in a venv of its own with
# the newest releases of the libraries pipacs pins, whatever the pins say; it passes whether
# the fast paths install there or fall back to stock behaviour, and prints which.
NEWEST := $(CURDIR)/.cache/venv-newest
NEWEST_TESTS := tests/test_fastpaths.py tests/test_dicom.py tests/test_negotiation.py \
	tests/test_server.py tests/test_dicom_gc.py
test-newest: setup ## the fast paths and a smoke set against the newest pynetdicom, pydicom, waitress, bottle
	test -x $(NEWEST)/bin/python || python3 -m venv $(NEWEST)
	$(NEWEST)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(NEWEST)/bin/pip install -q --disable-pip-version-check --upgrade --upgrade-strategy eager \
		pynetdicom pydicom waitress bottle numpy Pillow pytest hypothesis
	@$(NEWEST)/bin/pip list --disable-pip-version-check 2>/dev/null \
		| grep -iE '^(pynetdicom|pydicom|waitress|bottle) '
	@cd server && PYTHONPATH=src $(NEWEST)/bin/python -c \
		'import logging; logging.basicConfig(format="%(message)s"); \
		from pipacs import fastpaths; print(fastpaths.install())'
	cd server && PYTHONPATH=$(CURDIR)/server/src $(NEWEST)/bin/pytest -q -p no:cacheprovider \
		$(NEWEST_TESTS)

test-repo: setup ## repository tests: playbooks, inventory, templates, DHCP/DNS in namespaces
	$(BIN)/pytest -q tests

lint: lint-python lint-ansible

lint-python: setup
	$(BIN)/ruff check server bench
	cd server && $(BIN)/mypy
	$(BIN)/mypy bench

lint-ansible: setup
	$(BIN)/yamllint .
	$(BIN)/ansible-lint
	$(EXAMPLE_VAULT) $(BIN)/ansible-playbook --syntax-check molecule/*/converge.yml

# SD card images (README, "SD card images"): .cache/image/pipacs-bookworm-<arch>.img, .img.xz
# and .sha256. From Debian (debootstrap) or from a Raspberry Pi OS Lite image: BASE=file.img.xz.
# IMAGE_INVENTORY: the inventory whose group_vars the image gets (its vault password file in
# ANSIBLE_VAULT_PASSWORD_FILE; the example's is set here). REUSE=1: start again from the last
# build's unconverged root file system (after a failed converge: no new debootstrap and kernel).
ARCH ?= arm64
IMAGE_INVENTORY ?= inventory/example
image: setup ## flashable SD card image: make image ARCH=arm64|armhf [BASE=raspios-lite.img.xz]
	$(if $(filter inventory/example,$(IMAGE_INVENTORY)),$(EXAMPLE_VAULT)) image/build.sh build $(ARCH) \
		--inventory $(IMAGE_INVENTORY) $(if $(BASE),--base $(BASE)) $(if $(REUSE),--reuse)

# The whole image booted with its own kernel, initramfs and cmdline.txt (qemu-system, virt
# board, no network beyond two loopback ports): first boot, C-ECHO, /changes?last.
image-boot: ## boot the SD card image under qemu-system and check it: make image-boot ARCH=arm64|armhf
	image/boot.sh .cache/image/pipacs-bookworm-$(ARCH).img

# Two lanes of scenarios at once (PIPACS_MOLECULE_LANES): CI's 2 cores finish the set in
# about two thirds of the time one lane takes.
molecule: setup ## every molecule scenario on simulated Pis (podman + systemd)
	PIPACS_MOLECULE_LANES=$${PIPACS_MOLECULE_LANES:-2} molecule/resources/run-scenarios.sh

molecule-%: setup
	molecule/resources/run-scenarios.sh $*

# The hashed locks of the server's runtime dependencies per Pi architecture (and its build
# tools), resolved from server/pyproject.toml. Needs PyPI; run after changing its dependencies.
lock: setup ## regenerate server/locks/*.txt (pip --require-hashes files)
	$(BIN)/python server/locks/lock.py

bench: setup ## ingest benchmark, pipacs side by side with Debian's Orthanc
	$(BIN)/python bench/ingest.py

# The playbooks on simulated Pis reached over SSH (bench/fleet.py), phase by phase: site.yml
# from scratch and again, one Pi, config.yml, upgrade.yml, report.yml. The exit status says
# whether each phase did what it must. bench-fleet: 30 Pis, by hand (about 40 min here);
# fleet-smoke: the same on 2 Pis, in `make test`.
FLEET_PIS ?= 30
bench-fleet: setup ## the playbooks timed on FLEET_PIS (30) simulated Pis: make bench-fleet [FLEET_PIS=N]
	molecule/resources/testbed.sh all
	$(BIN)/python bench/fleet.py --pis $(FLEET_PIS)

fleet-smoke: setup ## every fleet playbook on 2 simulated Pis over SSH (CI's small bench-fleet)
	molecule/resources/testbed.sh all
	$(BIN)/python bench/fleet.py --pis 2

clean:
	rm -rf .cache server/.pytest_cache

# The roles and playbooks as the Ansible collection pipacs.classroom (galaxy.yml); staff install
# the tarball with `ansible-galaxy collection install` (README.md, "Install as a collection").
COLLECTION_DIR := $(CURDIR)/.cache/collection
collection: setup ## build the Ansible collection into .cache/collection/pipacs-classroom-VERSION.tar.gz
	$(BIN)/ansible-galaxy collection build --force --output-path $(COLLECTION_DIR)
