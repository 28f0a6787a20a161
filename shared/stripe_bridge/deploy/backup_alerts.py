"""Alerts on the scheduled NATS backup (``nats-backup`` CronJob, pushed metrics).

The CronJob pushes under ``job="stripe-bridge-backup"``; the Pushgateway is scraped with
``honor_labels: true``, so that job and the ``environment`` label arrive as pushed.
"""

from __future__ import annotations

from ..ops.backup_job import BACKUP_JOB
from .alert_model import _PROD, PROD, Alert, Scenario

LAST_SUCCESS = "stripe_bridge_backup_last_success_timestamp_seconds"
SUCCESS = "stripe_bridge_backup_success"
USED = "stripe_bridge_backup_volume_used_bytes"
SIZE = "stripe_bridge_backup_volume_size_bytes"
#: A daily backup is late after 25 h (one missed run plus slack), critical after 48 h.
MISSING_HOURS = 25
MISSING_CRITICAL_HOURS = 48


def backup_alerts() -> list[Alert]:
    """Failed, missing (warning, then critical) and volume filling (warning, critical)."""
    job = f'{{job="{BACKUP_JOB}",{_PROD}}}'
    age = f"time() - max by (environment) ({LAST_SUCCESS})"
    fill = f"max by (environment) ({USED} / ({SIZE} > 0))"
    # At 26 h the newest success is 25 h old: late, but not critically.
    day_old = "3600x3000"

    def volume(used: str) -> dict[str, str]:
        return {f"{USED}{job}": used, f"{SIZE}{job}": "1000x40"}

    return [
        Alert(
            name="NatsBackupFailed",
            expr=f"min by (environment) ({SUCCESS}) == 0",
            duration="30m",
            severity="warning",
            summary="The last NATS backup run failed",
            description=(
                "The nats-backup CronJob's last run (and its retries) failed: the newest backup is "
                "older than planned. NatsBackupMissing follows if the next run fails too."
            ),
            anchor="nats-backup-failed",
            firing=Scenario({f"{SUCCESS}{job}": "1x10 0x40"}, "45m", (PROD,)),
            # A failed attempt that a retry repaired within the half hour.
            quiet=Scenario({f"{SUCCESS}{job}": "1x10 0x10 1x30"}, "45m"),
        ),
        Alert(
            name="NatsBackupMissing",
            expr=f"{age} > {MISSING_HOURS} * 3600",
            duration="10m",
            severity="warning",
            summary=f"No successful NATS backup for more than {MISSING_HOURS} hours",
            description=(
                "The daily backup did not succeed (or did not run): a restore would lose more than "
                "a day of events and billing state."
            ),
            anchor="nats-backup-missing",
            firing=Scenario({f"{LAST_SUCCESS}{job}": "0x1700"}, "26h", (PROD,)),
            quiet=Scenario({f"{LAST_SUCCESS}{job}": "0+60x1700"}, "26h"),
        ),
        Alert(
            name="NatsBackupMissingCritical",
            expr=f"{age} > {MISSING_CRITICAL_HOURS} * 3600",
            duration="10m",
            severity="critical",
            summary=f"No successful NATS backup for more than {MISSING_CRITICAL_HOURS} hours",
            description="Two daily backups in a row are missing.",
            anchor="nats-backup-missing",
            firing=Scenario({f"{LAST_SUCCESS}{job}": "0x3000"}, "49h", (PROD,)),
            quiet=Scenario({f"{LAST_SUCCESS}{job}": day_old}, "26h"),
        ),
        Alert(
            name="NatsBackupVolumeFilling",
            expr=f"{fill} > 0.8",
            duration="10m",
            severity="warning",
            summary="The NATS backup volume is more than 80% full",
            description="Backups grow with the streams; at 100% the next backup fails.",
            anchor="nats-backup-volume",
            firing=Scenario(volume("850x40"), "20m", (PROD,)),
            quiet=Scenario(volume("500x40"), "20m"),
        ),
        Alert(
            name="NatsBackupVolumeFull",
            expr=f"{fill} > 0.95",
            duration="10m",
            severity="critical",
            summary="The NATS backup volume is more than 95% full",
            description="The next backup will fail for lack of space.",
            anchor="nats-backup-volume",
            firing=Scenario(volume("960x40"), "20m", (PROD,)),
            quiet=Scenario(volume("850x40"), "20m"),
        ),
    ]
