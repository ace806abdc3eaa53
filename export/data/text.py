"""Texts to speak: varied English sentences and word lists, split into train and held-out sets."""

from __future__ import annotations

import numpy as np

TRAIN_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Peter Piper picked a peck of pickled peppers.",
    "My mother made a marvellous plum pie before breakfast.",
    "Would you like a cup of warm milk before bed?",
    "The weather was wonderful on Wednesday morning.",
    "Bob bought a big blue balloon for the baby.",
    "I think we should open the window, it is getting hot in here.",
    "Oh no, I completely forgot about the meeting!",
    "How much wood would a woodchuck chuck?",
    "Every morning I walk my dog around the park.",
    "The museum opens at nine and closes at five.",
    "Could you possibly move your car a little bit?",
    "We were waiting for a while, but nobody came.",
    "Yes, absolutely, that sounds like a perfect plan.",
    "The boat floated slowly down the muddy river.",
    "Maybe tomorrow will be a better day for a picnic.",
    "Put the butter back in the fridge, please.",
    "I am so happy to see you again!",
    "This is really not what I wanted to hear.",
    "Fresh bread smells amazing in the morning.",
    "The moon was bright above the sleeping village.",
    "Why would anyone leave the oven on all night?",
    "Two hundred people marched through the old market.",
    "Please remember to buy milk, eggs and apples.",
    "A few minutes later the phone rang again.",
    "Who knows what the future may bring?",
    "Thank you very much for your patience.",
    "The children played happily in the warm summer rain.",
    "Stop, wait, I think I dropped my wallet.",
    "Our new office is on the fourth floor.",
    "Mmm, that soup was absolutely delicious.",
    "We should probably book the tickets before Friday.",
    "The big brown bear ambled over the bumpy path.",
    "Is it true that you moved to Boston last month?",
    "Nothing ever happens on a quiet Sunday afternoon.",
    "Look at the beautiful blue sky above the mountains.",
    "Please pass the pepper and the mashed potatoes.",
    "Her voice was soft, but everybody listened.",
    "The mail arrives at about noon every weekday.",
    "Zebras, moose and wombats live in very different places.",
    "I would rather go home early and sleep.",
    "Your umbrella is by the door, behind the boots.",
    "When in doubt, just be polite and smile.",
    "Bubbles popped one by one on the surface of the pool.",
    "We may miss the bus if we do not move now.",
    "The orchestra played music by Mozart and Brahms.",
    "Jump, bump, thump, the puppy tumbled down the steps.",
    "Who put the purple paint on my brand new boots?",
    "Honestly, I have no idea what you are talking about.",
    "Good evening, and welcome to the evening news.",
    "The cold wind blew across the open moor.",
    "Wow, you really outdid yourself this time!",
    "Pick up your books and put them back on the shelf.",
    "I woke up at noon and ate a bowl of oatmeal.",
    "Our team won the match by two points.",
    "Brush your teeth, wash your face and go to bed.",
    "Who owns the old boat moored by the bridge?",
    "Please keep your voice down in the library.",
)

HELDOUT_SENTENCES = (
    "Maybe we can meet by the pond at about two.",
    "The small brown mouse hid beneath the bed.",
    "Would you mind opening the blinds a bit?",
    "Beautiful flowers bloom in May and June.",
    "I ordered a pumpkin pie and a mug of cocoa.",
    "Nobody believed him, but he was telling the truth.",
    "Move the boxes to the basement before noon.",
    "Oh wow, what a wonderful surprise!",
    "The wind howled through the empty warehouse.",
    "Please bring a map, a rope and some water.",
    "Every time I call, the line is busy.",
    "Bubble baths make me feel much better.",
)

_TRAIN_WORDS = """apple baby back ball bamboo banana bath beam bear bed bee big bird blue boat book boom boot bottle
    bounce bowl box bread bridge brown bubble bump butter cake call camera candle cat chair cheese
    chip city cloud coffee cold cool cup dance day deep dinner dog door dream drum duck early earth
    egg empty evening face farm fast fish five floor flower fly food foot forest four free friend
    frog fun garden gate give glass gold good grape green happy hat heavy hello home honey hope
    house ice island jam jump key kind kite lamp large laugh leaf lemon light lime lion little long
    loud love lunch map market maybe me milk mind mirror money moon more morning mother mouse mouth
    move much mud music name never new nice night noon number ocean old open orange owl paper park
    party pea peach pen people pepper pie pink pipe plum pocket pool pop potato puppy purple queen
    quick quiet rain red river road rock room rope rose round run sad salt sand seven sheep ship
    shoe short silver sing sister sky sleep slow small smile snow soft soup spoon star stone storm
    street sugar summer sun sweet table tea three tiger time tomato tooth town tree two umbrella
    under up van very voice wait walk wall warm water wave way web week well whale wheel white why
    wide wind window winter wood wool world yellow yes you zoo"""
TRAIN_WORDS = tuple(_TRAIN_WORDS.split())

_HELDOUT_WORDS = """bubblegum pumpkin moonbeam mop whisper boomerang mumble pebble puzzle meadow oboe opera
    bamboozle wombat blueberry pompom marshmallow bonbon mambo jellybean yoyo poem"""
HELDOUT_WORDS = tuple(_HELDOUT_WORDS.split())


def sentences(split: str) -> tuple[str, ...]:
    return HELDOUT_SENTENCES if split == "heldout" else TRAIN_SENTENCES


def random_words(rng: np.random.Generator, split: str, n_min: int = 3, n_max: int = 9) -> str:
    """A random word sequence (train words for ``train``, held-out words for ``heldout``)."""
    words = HELDOUT_WORDS if split == "heldout" else TRAIN_WORDS
    n = int(rng.integers(n_min, n_max + 1))
    picked = [words[i] for i in rng.integers(0, len(words), n)]
    if rng.random() < 0.5:  # sometimes a comma pause inside
        picked[int(rng.integers(1, n))] += ","
    return " ".join(picked).capitalize() + str(rng.choice([".", ".", "!", "?"]))


def pick_text(rng: np.random.Generator, split: str, p_sentence: float = 0.7) -> str:
    """A built-in sentence of the split, or a random word sequence."""
    if rng.random() < p_sentence:
        pool = sentences(split)
        return pool[int(rng.integers(len(pool)))]
    return random_words(rng, split)
