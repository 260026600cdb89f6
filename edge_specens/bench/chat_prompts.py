"""The bench's chat workload: 20 everyday requests that are not code.

HumanEval requests echo their prompt (signatures, names, docstrings), which favours prompt lookup and
small proposers trained on code; ordinary chat echoes little and wanders more. Running both shows
what a strategy gains on each kind of traffic. The requests vary in length and kind (questions,
explanations, emails, summaries with their text, advice, how-tos) and are written for this bench, so
they carry no licence and need no download. Ids are stable: reports name prompts by them.
"""

from __future__ import annotations

_REQUESTS = (
    "Why is the sky blue during the day but red and orange at sunset?",
    "Write a short, polite email to my landlord asking when the broken heating in my flat will be repaired. "
    "It has been out for five days and the nights are getting cold.",
    "Summarise the following text in two sentences:\n\n"
    "The town council met on Tuesday to discuss the future of the old railway station. Built in 1892, the "
    "station has stood empty since the line closed in 1987, and its roof partly collapsed last winter. A "
    "local group wants to turn it into a market hall with space for small businesses, while a developer "
    "has offered to buy the site for flats. Councillors agreed to commission a survey of the building "
    "before making any decision, and to hold a public consultation in the spring.",
    "What is the difference between weather and climate?",
    "I have a job interview for an office manager position next week. What questions should I expect, "
    "and how can I prepare for them?",
    "Explain how a vaccine trains the immune system, in terms a twelve-year-old would understand.",
    "Give me a simple recipe for a vegetable soup that I can make with what is usually in the fridge.",
    "How do I get a red wine stain out of a light-coloured carpet?",
    "Summarise this customer review in one sentence and say whether it is positive or negative:\n\n"
    "I ordered the blue kettle after reading good things about it. Delivery took almost two weeks, which "
    "was annoying, and the box arrived slightly dented. The kettle itself works well: it boils quickly, is "
    "quiet, and the lid closes firmly. After a month of daily use I have no complaints about the product, "
    "only about the shipping.",
    "What are some good ways to stay focused when working from home?",
    "Write a friendly message to a colleague thanking them for covering my shifts while I was ill.",
    "Explain the difference between a fixed-rate and a variable-rate mortgage, with the main advantages "
    "and risks of each.",
    "My tomato plants have yellow leaves at the bottom. What could be causing this and what should I do?",
    "Summarise the main points of this message from a school:\n\n"
    "Dear parents, the school trip to the science museum will take place on Friday 14 March. Pupils must "
    "arrive at school by 8:15, as the coach leaves at 8:30 sharp. Please provide a packed lunch and a "
    "water bottle; no fizzy drinks are allowed. The trip costs 12 pounds, payable through the parent portal "
    "by 7 March. Pupils should wear school uniform and bring a coat, as part of the visit is outdoors. We "
    "expect to return by 3:30.",
    "How long should I boil an egg for a soft yolk?",
    "Plan a relaxed three-day visit to Lisbon for someone who likes food, history and walking.",
    "What should I consider when choosing between renting and buying a home?",
    "Explain what inflation is and why central banks raise interest rates to fight it.",
    "Write a short toast for my parents' thirtieth wedding anniversary dinner. Keep it warm and a bit funny.",
    "I keep waking up at 4 in the morning and can't fall back asleep. What habits might help?",
)

CHAT_PROMPTS: tuple[tuple[str, str], ...] = tuple((f"chat/{i}", text) for i, text in enumerate(_REQUESTS))
"""(id, request) pairs, chat/0 .. chat/19, sent through the chat template as a user message."""
