#!/bin/bash
# The DaCHS side of benchmarks/tap_peers.py, as root on Debian 12 (bookworm):
#
#   apt-get install -y gavodachs2-server postgresql-15-pgsphere postgresql-15-q3c
#   (if the package's post-install step failed because PostgreSQL was down:
#    pg_ctlcluster 15 main start && dpkg --configure -a)
#   bash benchmarks/dachs/setup.sh /var/tmp/tapbench/spectra.csv
#
# Installs q.rd as the resource "skybench/q" (table catalog.spectra in DaCHS's database),
# imports the CSV that `tap_peers.py prepare` wrote (with its q3c index), and starts the
# DaCHS server on 127.0.0.1:8080 (DaCHS's defaults); its TAP endpoint is
# http://127.0.0.1:8080/tap. Stop it with `dachs serve stop`.
set -euo pipefail
csv=$(realpath "${1:?usage: setup.sh WORKDIR/spectra.csv}")
here=$(dirname "$(realpath "$0")")
rd_dir=/var/gavo/inputs/skybench

pg_ctlcluster 15 main start 2>/dev/null || true   # already running is fine
install -d -o dachsroot -g gavo "$rd_dir/data"
install -o dachsroot -g gavo -m 0644 "$here/q.rd" "$rd_dir/q.rd"
# A copy, not a link: DaCHS runs as its own users, which may not enter the work folder.
install -o dachsroot -g gavo -m 0644 "$csv" "$rd_dir/data/spectra.csv"

as_dachs() { su -s /bin/sh dachsroot -c "$*"; }
as_dachs dachs imp skybench/q          # creates catalog.spectra, loads the rows, builds the index
dachs serve stop 2>/dev/null || true     # a server from an earlier setup
dachs serve start                      # drops to the 'gavo' user itself
for _ in $(seq 60); do
  curl -sf http://127.0.0.1:8080/tap/availability >/dev/null && break
  sleep 1
done
curl -sf http://127.0.0.1:8080/tap/availability >/dev/null
echo "DaCHS TAP at http://127.0.0.1:8080/tap"
