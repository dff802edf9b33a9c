"""Outputs built in a temporary folder and moved into place at the end."""

import hashlib
import os
import shutil
import tempfile

from keras_l0.cli._common import PROG
from keras_l0.cli._common import REPORT_NAME
from keras_l0.cli._common import UsageError


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Staging:
    """Outputs written in a temporary folder beside `output_dir`, moved
    into place by `commit()`, removed on failure."""

    def __init__(self, output_dir, names, force):
        self.output_dir = output_dir
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise UsageError(f"{output_dir} exists and is not a folder")
        self.existed = os.path.isdir(output_dir)
        if self.existed:
            taken = [
                n for n in names if os.path.lexists(os.path.join(output_dir, n))
            ]
            if taken and not force:
                raise UsageError(
                    f"{os.path.join(output_dir, taken[0])} exists "
                    "(use --force to overwrite)"
                )
            base = output_dir
        else:
            base = os.path.dirname(output_dir)
            while not os.path.exists(base):
                base = os.path.dirname(base)
            if not os.path.isdir(base):
                raise UsageError(
                    f"cannot create {output_dir}: {base} is not a folder"
                )
        try:
            self.path = tempfile.mkdtemp(prefix=f".{PROG}-", dir=base)
        except OSError as e:
            raise UsageError(f"cannot write to {base}: {e.strerror}")

    def file(self, name):
        return os.path.join(self.path, name)

    def commit(self):
        """Renames the staging folder to `output_dir`, or, into an existing
        `output_dir`, replaces the files one by one, `REPORT_NAME` last."""
        try:
            if self.existed:
                staged = sorted(
                    os.listdir(self.path), key=lambda n: n == REPORT_NAME
                )
                for name in staged:
                    target = os.path.join(self.output_dir, name)
                    os.replace(self.file(name), target)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.path, 0o777 & ~umask)
                os.makedirs(os.path.dirname(self.output_dir), exist_ok=True)
                os.rename(self.path, self.output_dir)
        except OSError as e:
            raise UsageError(f"cannot write to {self.output_dir}: {e.strerror}")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)
