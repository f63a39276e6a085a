"""The worker: lease runs, heartbeat, execute them with the engine, drain on a signal.

Also the module loader (``python -m ironflow.run worker MODULE``), this process's
identity as a lease holder, and the projection runners a worker hosts.
"""
