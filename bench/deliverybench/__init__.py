"""The delivery benchmark of voicehooks (`python bench/delivery.py`, see bench/README.md).

It talks to the service only through its CLI processes, its HTTP API and SQL that holds
whatever the queue's tables are called, so that it measures any version of the queue.
"""
