"""`manage.py embedder_export`: build the ONNX models (fp32 + int8) from the packaged weights.

Run at setup/deploy time so the first embedding call does not pay the ~10-20 s export; the
embedder exports lazily on first use anyway if this was skipped.
"""

from pathlib import Path

from django.core.management.base import BaseCommand

from vectors.embedders import onnx_model_dir
from vectors.embedders.onnx import export_is_current, export_onnx_model


class Command(BaseCommand):
    # A setup step: needs neither the database nor the URL configuration.
    requires_system_checks: list[str] = []
    help = "Export the packaged all-MiniLM-L6-v2 to ONNX (fp32 and int8) under DATA_DIR/models/."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="Rebuild even if a current export exists.")
        parser.add_argument(
            "--output", default="", help="Target folder (default: DATA_DIR/models/all-MiniLM-L6-v2/onnx)."
        )

    def handle(self, *args, force: bool = False, output: str = "", **options) -> None:
        target = Path(output) if output else onnx_model_dir()
        if export_is_current(target) and not force:
            self.stdout.write(f"ONNX models already current in {target}.")
            return
        self.stdout.write(f"Exporting ONNX models to {target} ...")
        result = export_onnx_model(target, force=force)
        for path in (result.fp32_path, result.int8_path):
            self.stdout.write(f"  {path.name}: {path.stat().st_size / 1e6:.1f} MB")
        self.stdout.write(self.style.SUCCESS("Done."))
