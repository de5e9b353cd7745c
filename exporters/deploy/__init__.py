"""Deploy graphs: trained detectors wrapped into fixed-output modules (export code lives here, not in models)."""
