"""The words the offline stack listens for.

Pocketsphinx in free dictation garbles telephone speech; a small language model
built from the phrases a call can contain (the script's keywords and do-not-call
phrases, voicemail greetings, everyday replies) catches the words that matter.
The same machine phrases drive answering-machine detection (`agent.amd`).
"""

from __future__ import annotations

import re

from campaign.contract import Script

#: A greeting that offers to take a message: leave the voicemail.
VOICEMAIL_PHRASES: tuple[str, ...] = (
    "leave a message",
    "leave your name",
    "leave your message",
    "leave me a message",
    "after the tone",
    "after the beep",
    "at the tone",
    "the beep",
    "the tone",
    "can't take your call",
    "cannot take your call",
    "can't talk",
    "not available",
    "record your message",
    "missed your call",
    "voicemail",
    "voice mail",
    "get back to you",
    "call you back",
    "message",
)

#: Said by mailboxes and menus alike ("You have reached Acme. For sales, press one."):
#: a machine, but not which one.
MACHINE_PHRASES: tuple[str, ...] = (
    "you have reached",
    "you've reached",
)

#: Names of telephone keys: a menu names the keys to press, but so does a number read
#: out, so a key alone is only half a cue for a menu. Digits count as their names
#: (a cloud STT writes "press 1").
KEY_NAMES: tuple[str, ...] = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("star", "pound"),
)

#: A greeting that says no message can be left.
UNAVAILABLE_PHRASES: tuple[str, ...] = (
    "mailbox is full",
    "mailbox has not been set up",
    "has not been set up",
    "cannot accept messages",
    "not accepting messages",
)

#: A menu rather than a person or a mailbox.
IVR_PHRASES: tuple[str, ...] = (
    "press one",
    "press two",
    "press three",
    "press zero",
    "press four",
    "press five",
    "press six",
    "press seven",
    "press eight",
    "press nine",
    "press star",
    "press pound",
    "please press",
    "or press",
    "press the pound key",
    "for english press",
    "for english",
    "press",
    "menu",
    "carefully",
    "for sales",
    "for support",
    "for billing",
    "main menu",
    "menu options",
    "listen carefully",
    "operator",
    "extension",
    "thank you for calling",
    "welcome to",
    "if you know your party's extension",
    "dial it at any time",
    "office is now closed",
    "closed",
    "now closed",
    "our hours",
    "business hours",
)

#: A call-screening service asking who calls and why (Pixel, iOS, carriers).
SCREENER_PHRASES: tuple[str, ...] = (
    "screening service",
    "call screening",
    "screening",
    "say your name",
    "state your name",
    "record your name",
    "your name and",
    "reason for your call",
    "reason for calling",
    "why you're calling",
    "why you are calling",
    "the person you're calling",
    "the person you are calling",
    "if this person is available",
    "get a copy of this conversation",
)

#: What people say on the phone that carries no disposition.
EVERYDAY_REPLIES: tuple[str, ...] = (
    "hello",
    "hello who is this",
    "who is this",
    "what is this about",
    "yes",
    "yes i am",
    "no",
    "no thanks",
    "no thank you",
    "sure",
    "okay",
    "sorry",
    "sorry i can't talk right now",
    "thank you",
    "goodbye",
    "bye",
)

#: Words of a person answering (all among EVERYDAY_REPLIES): a short greeting that says
#: them is a person unless machine words or a beep say otherwise, however long it ran.
PERSON_PHRASES: tuple[str, ...] = (
    "hello",
    "who is this",
    "what is this about",
    "sorry",
    "can't talk right now",
)

#: Sentence frames a keyword is heard in, so the model knows its neighbours.
_CARRIERS: tuple[str, ...] = ("{}", "yes {}", "no {}", "i am {}", "call me {}", "please call me {}")

_NOT_SPOKEN = re.compile(r"[^a-z' ]+")


def normalize(text: str) -> str:
    """Lower case, letters, apostrophes and single spaces: how phrases are compared."""
    return " ".join(_NOT_SPOKEN.sub(" ", text.lower()).split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words (both normalized here)."""
    return f" {normalize(phrase)} " in f" {normalize(text)} "


def corpus(script: Script) -> list[str]:
    """The sentences the offline speech model is built from, normalized, no duplicates."""
    lines: list[str] = []
    for keyword in script.keywords:
        lines.extend(carrier.format(keyword) for carrier in _CARRIERS)
    lines.extend(script.do_not_call_phrases)
    lines.extend(f"please {phrase}" for phrase in script.do_not_call_phrases)
    lines.extend(VOICEMAIL_PHRASES)
    lines.extend(MACHINE_PHRASES)
    lines.extend(UNAVAILABLE_PHRASES)
    lines.extend(IVR_PHRASES)
    lines.extend(SCREENER_PHRASES)
    lines.extend(EVERYDAY_REPLIES)
    seen: dict[str, None] = {}
    for line in lines:
        if text := normalize(line):
            seen.setdefault(text, None)
    return list(seen)
