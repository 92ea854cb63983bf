"""The base of the request bodies clients send (chat completions, messages, ...).

A plain pydantic model, not ninja's Schema: Schema wraps every object it
validates, nested ones included, in a DjangoGetter (so it can read ORM
objects) through a Python validator, and a request body is JSON, never an ORM
object. Without it the body is validated in pydantic-core alone: ninja's
body validation was ~4% of a chat request's CPU (docs/PERFORMANCE.md). ninja
treats any pydantic model as a body and documents it the same way.
"""

from pydantic import BaseModel


class WireModel(BaseModel):
    pass
