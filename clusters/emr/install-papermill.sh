#!/bin/bash
# EMR bootstrap action for job clusters (runs on every node): install papermill and the
# kernel it drives, so the run's step can execute the notebook S3 to S3, and put the
# portal's telemetry package (argument 1: s3://.../telemetry.zip) on Python's path.
# Shipped by the portal; upload both with `manage.py upload_emr_bootstrap`.
set -euo pipefail
sudo python3 -m pip install --quiet "papermill>=2.6" "ipykernel>=6" "boto3" "plotly" "scrapbook==0.5.0"
sudo python3 -m ipykernel install --name python3
if [ $# -ge 1 ]; then
    target=/opt/analysis-portal
    aws s3 cp "$1" /tmp/telemetry.zip
    sudo rm -rf "$target" && sudo mkdir -p "$target"
    sudo python3 -m zipfile -e /tmp/telemetry.zip "$target"
    site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$target" | sudo tee "$site/analysis-portal.pth" > /dev/null
fi
