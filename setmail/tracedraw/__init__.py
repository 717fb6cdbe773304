"""Traces as pictures: a purchase's mails as a sequence diagram (``setmail trace``).

``collect.build`` reads a world into a ``model.Trace`` (lanes = parties, arrows = mails, each with
its SET type, size, delay and its recipient's verdict); ``text``, ``svg`` and ``html`` draw a
trace without touching a world; ``follow`` redraws one as the purchase goes on.
"""
