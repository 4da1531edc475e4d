"""Instant push of selected QMP events to Alertmanager (API v2), off the event path.

A Prometheus alert on ``qemu_events_total`` waits for a scrape and a rule evaluation; a console
login should page at once. :meth:`AlertPusher.notify` runs in the exporter's asyncio loop for
every event: it only filters and enqueues. One daemon thread per Alertmanager drains its own
bounded queue, POSTs batches to ``/api/v2/alerts`` within a deadline, and retries with backoff.

Anyone who reaches a VM's VNC port can make QEMU send thousands of events a second, so the
queue is fair as well as bounded:

* **coalescing**: an event whose alert is still queued (same labels, and for a console event the
  same client address) joins it: the alert takes the newest event's annotations and times, and
  its ``events`` annotation counts the events it stands for;
* **a share per VM**: one VM holds at most a tenth of the queue (``VM_SHARE``); beyond it, its
  own oldest alert for the same event (else its oldest) makes room (reason ``vm_share``);
* **full queue**: the VM holding the most alerts loses its oldest (reason ``queue_full``), so a
  noisy VM never evicts a quiet VM's alert;
* **batches** take the VMs in turn, each VM's oldest alert first.

Every drop is counted by reason, every reason at 0 from the start, and logged at most once a
minute per Alertmanager with the counts since the line before::

    qmp_exporter_alerts_sent_total{alertmanager="http://127.0.0.1:9093"} 3
    qmp_exporter_alert_errors_total{alertmanager="http://127.0.0.1:9093"} 0
    qmp_exporter_alerts_dropped_total{alertmanager="http://127.0.0.1:9093",reason="vm_share"} 0
    qmp_exporter_alert_queue_length{alertmanager="http://127.0.0.1:9093"} 0

A POST is bounded in time and in what it reads: connect and each read time out
(``timeout``), a watchdog shuts the connection down when the whole exchange outlasts
``deadline`` (an answer trickled a byte at a time would otherwise hold the sender for ever,
since the timeout is per read), and at most ``MAX_ANSWER_BYTES`` of an answer are read (its
start goes to the log; the rest is never downloaded).
"""

from qmp_exporter.alerting.alerts import alert_name, build_alert
from qmp_exporter.alerting.pusher import DROP_REASONS, AlertPusher

__all__ = ["DROP_REASONS", "AlertPusher", "alert_name", "build_alert"]
