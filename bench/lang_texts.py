"""Ground-truth paragraphs for the languages benchmark and tests (written for this project).

Plain clinical prose in each language, no real patient: a discharge-letter register, with the
letters each language needs (umlauts and sharp s, accents and cedillas, simplified and traditional
Han, kana, Hangul). Lines are wrapped by the renderer, not here.
"""
from __future__ import annotations

TEXTS: dict[str, str] = {
    "eng": (
        "The patient was admitted on the third of March with chest pain and shortness of breath. "
        "An electrocardiogram showed no acute changes, and the troponin level was within normal limits. "
        "She was treated with aspirin and observed overnight on the cardiology ward. "
        "On discharge she was advised to avoid heavy exertion and to return if the pain recurred. "
        "A follow-up appointment with her general practitioner is arranged in two weeks."
    ),
    "deu": (
        "Die Patientin wurde am dritten März wegen Brustschmerzen und Atemnot stationär aufgenommen. "
        "Das Elektrokardiogramm zeigte keine akuten Veränderungen, der Troponinwert lag im Normbereich. "
        "Sie erhielt Acetylsalicylsäure und wurde über Nacht auf der kardiologischen Station überwacht. "
        "Bei der Entlassung wurde ihr geraten, größere körperliche Anstrengungen zu vermeiden und sich "
        "bei erneuten Beschwerden sofort vorzustellen. Ein Kontrolltermin beim Hausarzt ist in zwei "
        "Wochen vereinbart. Die übrige Medikation wird unverändert fortgeführt."
    ),
    "fra": (
        "La patiente a été hospitalisée le trois mars pour une douleur thoracique et un essoufflement. "
        "L'électrocardiogramme n'a montré aucune modification aiguë et le taux de troponine était normal. "
        "Elle a reçu de l'aspirine et a été surveillée pendant la nuit au service de cardiologie. "
        "À sa sortie, il lui a été conseillé d'éviter les efforts physiques importants et de revenir "
        "si la douleur réapparaît. Un rendez-vous de contrôle chez son médecin traitant est prévu "
        "dans deux semaines. Le reste du traitement est poursuivi sans changement."
    ),
    "spa": (
        "La paciente ingresó el tres de marzo por dolor torácico y dificultad para respirar. "
        "El electrocardiograma no mostró cambios agudos y el nivel de troponina fue normal. "
        "Recibió ácido acetilsalicílico y permaneció en observación durante la noche en cardiología. "
        "Al alta se le aconsejó evitar esfuerzos físicos intensos y volver si el dolor reaparecía. "
        "Se ha programado una cita de control con su médico de cabecera dentro de dos semanas."
    ),
    "ita": (
        "La paziente è stata ricoverata il tre marzo per dolore toracico e mancanza di respiro. "
        "L'elettrocardiogramma non ha mostrato alterazioni acute e la troponina era nella norma. "
        "Ha ricevuto acido acetilsalicilico ed è stata osservata durante la notte in cardiologia. "
        "Alla dimissione le è stato consigliato di evitare sforzi fisici intensi e di tornare se il "
        "dolore si ripresenta. È previsto un controllo dal medico di famiglia tra due settimane."
    ),
    "chi_sim": (
        "患者于三月三日因胸痛和呼吸困难入院。心电图未见急性改变，肌钙蛋白水平在正常范围内。"
        "入院后给予阿司匹林治疗，并在心内科病房观察一夜。出院时建议患者避免剧烈体力活动，"
        "如胸痛再次出现应立即就诊。两周后到社区医生处复查，其余药物继续按原方案服用。"
        "患者既往有高血压病史，平时规律服用降压药物，血压控制良好。"
    ),
    "chi_tra": (
        "患者於三月三日因胸痛和呼吸困難入院。心電圖未見急性改變，肌鈣蛋白水平在正常範圍內。"
        "入院後給予阿斯匹靈治療，並在心臟內科病房觀察一夜。出院時建議患者避免劇烈體力活動，"
        "如胸痛再次出現應立即就診。兩週後到家庭醫師處複查，其餘藥物繼續按原方案服用。"
    ),
    "jpn": (
        "患者は三月三日に胸痛と息切れのため入院しました。心電図では急性の変化は認められず、"
        "トロポニン値も正常範囲内でした。アスピリンを投与し、循環器内科病棟で一晩経過を観察しました。"
        "退院時には激しい運動を避けるように説明し、痛みが再び出現した場合はすぐに受診するよう"
        "伝えました。二週間後にかかりつけ医の外来で再診の予定です。その他の薬はこれまで通り継続します。"
    ),
    "kor": (
        "환자는 삼월 삼일 흉통과 호흡곤란으로 입원하였습니다. 심전도에서 급성 변화는 없었고 "
        "트로포닌 수치는 정상 범위였습니다. 아스피린을 투여하고 심장내과 병동에서 하룻밤 경과를 "
        "관찰하였습니다. 퇴원 시 심한 운동을 피하고 통증이 다시 생기면 즉시 내원하도록 "
        "설명하였습니다. 이주 후 가정의학과 외래에서 재진할 예정입니다."
    ),
}

#: Languages written without spaces between words (wrapped by character, compared without spaces).
CJK = {"chi_sim", "chi_tra", "jpn"}
