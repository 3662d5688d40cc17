"""plasmatrace: plasma-pool batch traceability from donor to consignee and back."""

__version__ = "0.1.0"
