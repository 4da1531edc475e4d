"""The QMP monitors as a source of VM states: one poller per monitor (``MonitorSource``), what a
poll asks and learns, and the collectors chosen and run in each poll."""
