"""Cooperative sockets and serving, shared by the backends and the balancer.

``greensock`` (GreenSocket: a cheap cooperative socket), ``greenpool``
(GreenletPool: reused greenlets, slots a caller may hold), ``server`` (the
gevent server base: accept, backoff, drain), ``stream`` (ClientStream: a
client connection as parser events; answering and closing), ``idle`` (the
idle-connection registry a graceful stop uses) and ``listen`` (binding,
open-files limit).  Nothing is imported here, so that a process importing
``gservers.net.listen`` (the thread model) never loads gevent.
"""
