from django.db import models


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown"  # not probed yet, or too few results to say
    UP = "up"  # the recovery threshold of consecutive healthy probes was reached
    DOWN = "down"  # the failure threshold of consecutive failed probes was reached
