"""The national index service: one main index for the whole country.

Provinces claim identities here (:mod:`national.api`, service ``NationalIndex``);
hospitals resolve scanned codes here (service ``HospitalResolution``), routed to
the code's home province.
"""
