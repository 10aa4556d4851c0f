#!/bin/bash
# EMR bootstrap action for job clusters (runs on every node): install papermill and the
# kernel it drives, so the run's step can execute the notebook S3 to S3.
# Shipped by the portal; upload it with `manage.py upload_emr_bootstrap`.
set -euo pipefail
sudo python3 -m pip install --quiet "papermill>=2.6" "ipykernel>=6" "boto3" "plotly" "scrapbook==0.5.0"
sudo python3 -m ipykernel install --name python3
