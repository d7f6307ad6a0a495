"""`atelier`: the command line for merchandisers' scripts and operators. It talks to the service over
HTTP only, exactly as any other client would."""
