"""Staged Quality-Diversity: the `controller` as a pure state machine, its `stages` and
schedules, the `advance`ment rules, the elite `archive`, the `service` that runs it on the
broker, the `client` a producer asks for each problem's stage, and the `plots`."""
