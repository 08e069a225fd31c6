#!/usr/bin/env bash
# Until the first release the schema has one migration, regenerated from the models.
# After a release, add migrations with `alembic revision --autogenerate` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f campaign/migrations/versions/0001_initial.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from campaign.store.db import alembic_config
cfg = alembic_config(f"sqlite:///{sys.argv[1]}/empty.db")
command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PY
mv campaign/migrations/versions/0001_*.py campaign/migrations/versions/0001_initial.py
.venv/bin/ruff format -q campaign/migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix campaign/migrations/versions/0001_initial.py || true
rm -rf "$tmp"
echo "wrote campaign/migrations/versions/0001_initial.py"
