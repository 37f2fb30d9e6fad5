"""Webhooks: change notifications for the applications built on capabilities.

A namespace's authors (or an admin) subscribe the namespace, and a node's operators
subscribe the node, to event types (:data:`.events.EVENTS`): versions published,
deprecated and retired; access requested, granted and refused; entries arriving by
cascade; linked nodes becoming unreachable and reachable again.

- :mod:`.events` writes an event's deliveries into a durable outbox
  (``webhook_delivery``) **in the transaction of the change it reports**: a change
  that commits has its deliveries, one that rolls back has none.
- :mod:`.delivery` (the node's leader, one per store) sends each subscription's
  deliveries in order, signed in the Standard Webhooks format (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature``), through the same address guard as job
  callbacks; a failed delivery is retried with backoff (it survives restarts: it is a
  row) and holds back the subscription's later ones, so a receiver that was down gets
  every event, in order, once it is back. Every attempt is logged.
- :mod:`.subscriptions` and :mod:`.api`: adding, listing, removing, testing
  subscriptions, their delivery log, and redelivery.
"""
