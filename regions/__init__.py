"""Regions and what runs in them: the region catalog, placements (an app in a region) and stage
placements (what a stage serves there); ``probes`` (the HTTP probe client, no models),
``health`` (probe rounds and the up/down state), ``incidents`` (opening, closing, flap damping,
reminders), ``alerts`` (what incident alerts say); ``aws/``, the only code that talks to AWS.
"""
