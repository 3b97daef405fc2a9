"""flagsched's notifier: Slack, PagerDuty, Opsgenie and signed webhooks (docs/notifications.md)."""
